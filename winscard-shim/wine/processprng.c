/* bcryptprimitives.dll stand-in for Wine 8.0, which lacks the DLL.
 *
 * Rust's standard library (1.78+) gets its randomness from
 * bcryptprimitives!ProcessPrng; without it every Rust program exits with
 * status 53 before main. This forwards to advapi32's RtlGenRandom
 * (SystemFunction036), which Wine has. Only the test rig uses it: real
 * Windows ships the DLL.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll processprng.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
