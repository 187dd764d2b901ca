/*
 * FFI abuse driver for the Windows build of winscard-shim (winscard.dll),
 * the counterpart of abuse.c (the pcsc-lite build, run under valgrind).
 *
 * Drives every export of our winscard.dll, A and W variants, through the
 * WinSCard ABI with NULL pointers, zero lengths, tiny buffers (ending at a
 * PAGE_NOACCESS page, so an overrun faults at once), SCARD_AUTOALLOCATE +
 * SCardFreeMemory, stale, foreign and truncated handles, misaligned
 * UTF-16 strings and concurrent threads, and checks the SCARD_* code of
 * every call. Then, as there is no valgrind under Wine, a leak check: the
 * whole single-threaded sequence many times over, comparing the live bytes
 * and blocks of every process heap (HeapWalk: the DLL allocates from the
 * process heap), the commit charge (GetProcessMemoryInfo: PrivateUsage, or
 * PagefileUsage under Wine, which leaves PrivateUsage 0), the handle count
 * (where the system reports one) and the SCARD_AUTOALLOCATE buffers still
 * out, after a warm-up and after the run.
 *
 * Built with x86_64-w64-mingw32-gcc against mingw's <winscard.h>, linked to
 * the import library cargo makes for our winscard.dll, and run under Wine
 * by scripts/test-windows.sh (WINEDLLOVERRIDES=winscard=n, the DLL next to
 * the executable); the driver checks that the winscard.dll it got is the
 * one beside it.
 *
 * Usage: abuse_win MODE [ITERATIONS [selftest]]
 *   MODE card       VIRTUAL_PIV_CARD_FILE names one card (reader 0)
 *        noreaders  nothing configured: zero readers
 *        noservice  a configuration that cannot be opened
 *   ITERATIONS of the leak check (default 2000, 0: none); `selftest` leaks
 *   one buffer per iteration on purpose, so the leak check must fail.
 *
 * Exit status 0 when every check passed; each failure is printed with its
 * line, the call and the code it got and wanted.
 */
#define _WIN32_WINNT 0x0A00
#define __USE_MINGW_ANSI_STDIO 1
#include <windows.h>
#include <winscard.h>
#include <psapi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

/* Exports mingw's <winscard.h> does not declare (Windows 7 / 8 additions),
 * with the prototypes of the Windows SDK documentation. */
LONG WINAPI SCardAudit(SCARDCONTEXT hContext, DWORD dwEvent);
LONG WINAPI SCardGetDeviceTypeIdA(SCARDCONTEXT hContext, LPCSTR szReaderName, LPDWORD pdwDeviceTypeId);
LONG WINAPI SCardGetDeviceTypeIdW(SCARDCONTEXT hContext, LPCWSTR szReaderName, LPDWORD pdwDeviceTypeId);
LONG WINAPI SCardGetReaderIconA(SCARDCONTEXT hContext, LPCSTR szReaderName, LPBYTE pbIcon, LPDWORD pcbIcon);
LONG WINAPI SCardGetReaderIconW(SCARDCONTEXT hContext, LPCWSTR szReaderName, LPBYTE pbIcon, LPDWORD pcbIcon);
LONG WINAPI SCardGetReaderDeviceInstanceIdA(SCARDCONTEXT hContext, LPCSTR szReaderName,
					    LPSTR szDeviceInstanceId, LPDWORD pcchDeviceInstanceId);
LONG WINAPI SCardGetReaderDeviceInstanceIdW(SCARDCONTEXT hContext, LPCWSTR szReaderName,
					    LPWSTR szDeviceInstanceId, LPDWORD pcchDeviceInstanceId);
LONG WINAPI SCardListReadersWithDeviceInstanceIdA(SCARDCONTEXT hContext, LPCSTR szDeviceInstanceId,
						  LPSTR mszReaders, LPDWORD pcchReaders);
LONG WINAPI SCardListReadersWithDeviceInstanceIdW(SCARDCONTEXT hContext, LPCWSTR szDeviceInstanceId,
						  LPWSTR mszReaders, LPDWORD pcchReaders);

#ifndef SCARD_PROVIDER_KSP
#define SCARD_PROVIDER_KSP 3
#endif
#ifndef SCARD_PROVIDER_CARD_MODULE
#define SCARD_PROVIDER_CARD_MODULE 0x80000001
#endif
#ifndef SCARD_READER_TYPE_USB
#define SCARD_READER_TYPE_USB 0x04
#endif
#define CM_IOCTL_GET_FEATURE_REQUEST SCARD_CTL_CODE(3400)

#define READER_A "Virtual PIV Reader 0"
#define READER_W L"Virtual PIV Reader 0"
#define PNP_A "\\\\?PnP?\\Notification"
#define PNP_W L"\\\\?PnP?\\Notification"
#define CARD_A "Identity Device (NIST SP 800-73 [PIV])"
#define CARD_W L"Identity Device (NIST SP 800-73 [PIV])"
/* The largest command the shim accepts (extended APDU, 64 KiB of data). */
#define MAX_APDU (4 + 3 + 65536 + 3)
/* The largest item SCardWriteCache keeps. */
#define MAX_CACHE_ITEM (64 * 1024)

/* ------------------------------------------------------------------ */
/* Checks                                                              */

static volatile LONG checks, failures, printed;
/* Checks whose number depends on timing (the racing threads' loops, the
 * SCardCancel retries): kept apart so `checks` is the same in every run. */
static volatile LONG timed_checks;
static __thread int timed;
/* Where the driver is, for a crash report. */
static const char *volatile last_call = "start";
static volatile int last_line;
static const char *volatile section = "";

static const struct {
	DWORD code;
	const char *name;
} NAMES[] = {
#define N(x) {(DWORD)(x), #x}
	N(SCARD_S_SUCCESS), N(SCARD_F_INTERNAL_ERROR), N(SCARD_E_CANCELLED),
	N(SCARD_E_INVALID_HANDLE), N(SCARD_E_INVALID_PARAMETER), N(SCARD_E_INVALID_TARGET),
	N(SCARD_E_NO_MEMORY), N(SCARD_E_INSUFFICIENT_BUFFER), N(SCARD_E_UNKNOWN_READER),
	N(SCARD_E_TIMEOUT), N(SCARD_E_SHARING_VIOLATION), N(SCARD_E_NO_SMARTCARD),
	N(SCARD_E_UNKNOWN_CARD), N(SCARD_E_PROTO_MISMATCH), N(SCARD_E_NOT_READY),
	N(SCARD_E_INVALID_VALUE), N(SCARD_E_NOT_TRANSACTED), N(SCARD_E_READER_UNAVAILABLE),
	N(SCARD_E_NO_SERVICE), N(SCARD_E_UNEXPECTED), N(SCARD_E_UNSUPPORTED_FEATURE),
	N(SCARD_E_NO_READERS_AVAILABLE), N(SCARD_W_RESET_CARD), N(SCARD_W_REMOVED_CARD),
	N(SCARD_W_CACHE_ITEM_NOT_FOUND), N(SCARD_W_CACHE_ITEM_STALE), N(SCARD_W_CACHE_ITEM_TOO_BIG),
	N(ERROR_INVALID_HANDLE),
#undef N
};

static const char *name_of(LONG rv)
{
	for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++)
		if (NAMES[i].code == (DWORD)rv)
			return NAMES[i].name;
	return "?";
}

static void fail_line(int line, const char *what, const char *detail)
{
	InterlockedIncrement(&failures);
	/* A broken build would fail thousands of times: the first 200 say it. */
	if (InterlockedIncrement(&printed) <= 200)
		fprintf(stderr, "FAIL abuse_win.c:%d [%s]: %s: %s\n", line, section, what, detail);
}

static void count(void)
{
	InterlockedIncrement(timed ? &timed_checks : &checks);
}

static LONG expect(int line, const char *what, LONG got, LONG want)
{
	count();
	if (got != want) {
		char d[256];
		snprintf(d, sizeof d, "got 0x%08lX (%s), want 0x%08lX (%s)", (unsigned long)got,
			 name_of(got), (unsigned long)want, name_of(want));
		fail_line(line, what, d);
	}
	return got;
}

static LONG expect2(int line, const char *what, LONG got, LONG a, LONG b)
{
	count();
	if (got != a && got != b) {
		char d[256];
		snprintf(d, sizeof d, "got 0x%08lX (%s), want 0x%08lX (%s) or 0x%08lX (%s)",
			 (unsigned long)got, name_of(got), (unsigned long)a, name_of(a),
			 (unsigned long)b, name_of(b));
		fail_line(line, what, d);
	}
	return got;
}

static void truth(int line, const char *what, int ok)
{
	count();
	if (!ok)
		fail_line(line, what, "is false");
}

#define AT(call) (last_line = __LINE__, last_call = #call)
/* EXPECT(call, code): the call returns exactly that code. */
#define EXPECT(call, want) (AT(call), expect(__LINE__, #call, (LONG)(call), (LONG)(want)))
#define EXPECT2(call, a, b) (AT(call), expect2(__LINE__, #call, (LONG)(call), (LONG)(a), (LONG)(b)))
/* Success, a closed handle or a reset by another thread. */
#define EXPECT_RACE(call)                                                                     \
	do {                                                                                  \
		LONG rv_ = (AT(call), (LONG)(call));                                          \
		expect2(__LINE__, #call, rv_ == (LONG)SCARD_W_RESET_CARD ? OK : rv_, OK, E_BADHANDLE); \
	} while (0)
#define CHECK(cond) truth(__LINE__, #cond, !!(cond))

#define OK ((LONG)SCARD_S_SUCCESS)
#define E_BADHANDLE ((LONG)SCARD_E_INVALID_HANDLE)
#define E_PARAM ((LONG)SCARD_E_INVALID_PARAMETER)
#define E_VALUE ((LONG)SCARD_E_INVALID_VALUE)
#define E_BUF ((LONG)SCARD_E_INSUFFICIENT_BUFFER)
#define E_UNSUP ((LONG)SCARD_E_UNSUPPORTED_FEATURE)

static const BYTE SELECT_PIV[] = {0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0, 0x00, 0x00,
				  0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x00};
static const BYTE GET_CHUID[] = {0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x00};

/* Handle values no one ever handed out (0 is special: see null_context). */
static const ULONG_PTR FOREIGN[] = {1, (ULONG_PTR)-1, 0x11, 0x7FFFFFFF, 0x80000000, 0x0100000F,
				    0x8000000000000000ULL, 0x7FFFFFFFFFFFFFFFULL, 0x123456789ABCULL};
#define NFOREIGN (sizeof FOREIGN / sizeof FOREIGN[0])

/* Any 16 bytes: with one card in the shim every identifier finds it. */
static UUID CARD_ID = {0x1d8ac658, 0xe065, 0x92a0, {0x85, 0xaf, 0x09, 0x0b, 0x07, 0x01, 0x02, 0x03}};

/* The card's ATR, learnt from SCardStatusA at start (card mode). */
static BYTE card_atr[36];
static DWORD card_atr_len;

/* A deterministic generator, the same on every C library. */
static uint32_t rnd_state = 7;
static uint32_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 17;
	rnd_state ^= rnd_state << 5;
	return rnd_state;
}

/* SCARD_AUTOALLOCATE buffers handed out and not yet given back. */
static volatile LONG outstanding;

static void got_auto(LONG rv)
{
	if (rv == OK)
		InterlockedIncrement(&outstanding);
}

static LONG free_auto(int line, SCARDCONTEXT c, const void *p)
{
	LONG rv = (last_line = line, last_call = "SCardFreeMemory", SCardFreeMemory(c, p));
	expect(line, "SCardFreeMemory(c, autoallocated)", rv, OK);
	if (rv == OK)
		InterlockedDecrement(&outstanding);
	/* A second free is refused, not a double free. */
	expect(line, "SCardFreeMemory(c, freed again)", SCardFreeMemory(c, p), E_PARAM);
	return rv;
}
#define FREE_AUTO(c, p) free_auto(__LINE__, (c), (p))

/* ------------------------------------------------------------------ */
/* Buffers that end at a PAGE_NOACCESS page: a write one byte past the  */
/* length the call was given faults at once (no valgrind under Wine).   */

#define GUARD_AREA (128 * 1024)
static BYTE *guard_end;

static void guard_init(void)
{
	SYSTEM_INFO si;
	GetSystemInfo(&si);
	BYTE *base = VirtualAlloc(NULL, GUARD_AREA + si.dwPageSize, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	DWORD old;
	if (!base || !VirtualProtect(base + GUARD_AREA, si.dwPageSize, PAGE_NOACCESS, &old)) {
		fprintf(stderr, "cannot set up the guard page\n");
		exit(3);
	}
	guard_end = base + GUARD_AREA;
}

/* n bytes right before the guard page, filled with 0xCD (single-threaded use). */
static void *guarded(size_t n)
{
	BYTE *p = guard_end - n;
	memset(p, 0xCD, n);
	return p;
}

static int untouched(const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (((const BYTE *)p)[i] != 0xCD)
			return 0;
	return 1;
}

/* ------------------------------------------------------------------ */

static SCARDCONTEXT establish(void)
{
	SCARDCONTEXT c = 0;
	EXPECT(SCardEstablishContext(SCARD_SCOPE_USER, NULL, NULL, &c), OK);
	return c;
}

static SCARDHANDLE connect_shared(SCARDCONTEXT c)
{
	SCARDHANDLE h = 0;
	DWORD proto = 0;
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_Tx, &h, &proto), OK);
	CHECK(proto == SCARD_PROTOCOL_T1);
	return h;
}

/* One command with a generous buffer; returns the code, *sw the status word. */
static LONG tx(SCARDHANDLE h, const BYTE *apdu, DWORD n, unsigned *sw)
{
	BYTE r[512];
	DWORD rl = sizeof r;
	LONG rv = SCardTransmit(h, SCARD_PCI_T1, apdu, n, NULL, r, &rl);
	if (sw)
		*sw = rv == OK && rl >= 2 ? (unsigned)(r[rl - 2] << 8 | r[rl - 1]) : 0;
	return rv;
}

/* ------------------------------------------------------------------ */
/* The buffer rules every (buffer, length) output shares.              */

struct target {
	SCARDCONTEXT c;
	SCARDHANDLE h;
	DWORD id;
	const void *name;
	int len_optional; /* SCardStatus: a NULL length means "not wanted" */
};

typedef LONG (*fill_fn)(const struct target *t, void *buf, DWORD *len);

static LONG f_readers_a(const struct target *t, void *b, DWORD *l) { return SCardListReadersA(t->c, NULL, b, l); }
static LONG f_readers_w(const struct target *t, void *b, DWORD *l) { return SCardListReadersW(t->c, NULL, b, l); }
static LONG f_groups_a(const struct target *t, void *b, DWORD *l) { return SCardListReaderGroupsA(t->c, b, l); }
static LONG f_groups_w(const struct target *t, void *b, DWORD *l) { return SCardListReaderGroupsW(t->c, b, l); }
static LONG f_cards_a(const struct target *t, void *b, DWORD *l) { return SCardListCardsA(t->c, NULL, NULL, 0, b, l); }
static LONG f_cards_w(const struct target *t, void *b, DWORD *l) { return SCardListCardsW(t->c, NULL, NULL, 0, b, l); }
static LONG f_provider_a(const struct target *t, void *b, DWORD *l)
{
	return SCardGetCardTypeProviderNameA(t->c, CARD_A, t->id, b, l);
}
static LONG f_provider_w(const struct target *t, void *b, DWORD *l)
{
	return SCardGetCardTypeProviderNameW(t->c, CARD_W, t->id, b, l);
}
static LONG f_status_name_a(const struct target *t, void *b, DWORD *l)
{
	return SCardStatusA(t->h, b, l, NULL, NULL, NULL, NULL);
}
static LONG f_status_name_w(const struct target *t, void *b, DWORD *l)
{
	return SCardStatusW(t->h, b, l, NULL, NULL, NULL, NULL);
}
static LONG f_status_atr(const struct target *t, void *b, DWORD *l)
{
	return SCardStatusW(t->h, NULL, NULL, NULL, NULL, b, l);
}
static LONG f_attrib(const struct target *t, void *b, DWORD *l) { return SCardGetAttrib(t->h, t->id, b, l); }
static LONG f_cache_a(const struct target *t, void *b, DWORD *l)
{
	return SCardReadCacheA(t->c, &CARD_ID, t->id, (LPSTR)t->name, b, l);
}
static LONG f_cache_w(const struct target *t, void *b, DWORD *l)
{
	return SCardReadCacheW(t->c, &CARD_ID, t->id, (LPWSTR)t->name, b, l);
}

/*
 * `want` holds want_len elements of `elem` bytes (1: bytes / ANSI, 2: UTF-16).
 * NULL length → INVALID_PARAMETER; NULL buffer → the needed length; every
 * short length (in exactly that many bytes before the guard page) →
 * INSUFFICIENT_BUFFER, the needed length, and nothing written; exact and
 * large buffers → the contents and nothing past them; SCARD_AUTOALLOCATE
 * with NULL → INVALID_PARAMETER, with a pointer → a buffer SCardFreeMemory
 * takes back once.
 */
static void buffer_rules(const char *what, fill_fn f, const struct target *t, size_t elem,
			 const void *want, DWORD want_len)
{
	const char *outer = section;
	DWORD len;
	section = what;
	EXPECT(f(t, NULL, NULL), t->len_optional ? OK : E_PARAM);
	BYTE stackbuf[64];
	memset(stackbuf, 0xCD, sizeof stackbuf);
	EXPECT(f(t, stackbuf, NULL), t->len_optional ? OK : E_PARAM);
	CHECK(untouched(stackbuf, sizeof stackbuf));
	len = 12345;
	EXPECT(f(t, NULL, &len), OK);
	CHECK(len == want_len);
	len = 0;
	EXPECT(f(t, NULL, &len), OK);
	CHECK(len == want_len);
	for (DWORD n = 0; n < want_len; n += n < 64 ? 1 : 13) {
		void *b = guarded(n * elem);
		len = n;
		EXPECT(f(t, b, &len), E_BUF);
		CHECK(len == want_len);
		CHECK(untouched(b, n * elem));
	}
	void *b = guarded(want_len * elem);
	len = want_len;
	EXPECT(f(t, b, &len), OK);
	CHECK(len == want_len && memcmp(b, want, want_len * elem) == 0);
	const DWORD big_n = 8192 / 2;
	BYTE *big = guarded(big_n * elem);
	len = big_n;
	EXPECT(f(t, big, &len), OK);
	CHECK(len == want_len && memcmp(big, want, want_len * elem) == 0);
	CHECK(untouched(big + want_len * elem, (big_n - want_len) * elem));

	void *p = NULL;
	len = SCARD_AUTOALLOCATE;
	EXPECT(f(t, NULL, &len), E_PARAM);
	len = SCARD_AUTOALLOCATE;
	got_auto(EXPECT(f(t, &p, &len), OK));
	CHECK(p != NULL && len == want_len && memcmp(p, want, want_len * elem) == 0);
	/* SCardFreeMemory takes any context, or none. */
	FREE_AUTO(t->c, p);
	section = outer;
}

/* ------------------------------------------------------------------ */

/* This process must be using the winscard.dll beside it, not Wine's. */
static void our_dll(void)
{
	char exe[MAX_PATH], dll[MAX_PATH];
	HMODULE m = GetModuleHandleA("winscard.dll");
	CHECK(m != NULL);
	if (!m)
		return;
	DWORD ne = GetModuleFileNameA(NULL, exe, sizeof exe);
	DWORD nd = GetModuleFileNameA(m, dll, sizeof dll);
	char *se = strrchr(exe, '\\'), *sd = strrchr(dll, '\\');
	CHECK(ne > 0 && nd > 0 && se && sd);
	if (!se || !sd)
		return;
	int same = (se - exe) == (sd - dll) && _strnicmp(exe, dll, (size_t)(se - exe)) == 0;
	CHECK(same);
	if (!same)
		fprintf(stderr, "winscard.dll is %s, not the one beside %s\n", dll, exe);
	/* Wine's builtin has no data exports; ours is a Rust DLL. */
	CHECK(GetProcAddress(m, "g_rgSCardT1Pci") != NULL);
	CHECK(GetProcAddress(m, "SCardReadCacheW") != NULL);
}

static void pcis_and_started_event(void)
{
	CHECK(g_rgSCardT0Pci.dwProtocol == SCARD_PROTOCOL_T0);
	CHECK(g_rgSCardT1Pci.dwProtocol == SCARD_PROTOCOL_T1);
	CHECK(g_rgSCardRawPci.dwProtocol == SCARD_PROTOCOL_RAW);
	CHECK(g_rgSCardT0Pci.cbPciLength == sizeof(SCARD_IO_REQUEST));
	CHECK(g_rgSCardT1Pci.cbPciLength == sizeof(SCARD_IO_REQUEST));
	CHECK(g_rgSCardRawPci.cbPciLength == sizeof(SCARD_IO_REQUEST));

	/* The resource manager is the DLL itself: its event is always set. */
	HANDLE e = SCardAccessStartedEvent();
	CHECK(e != NULL);
	CHECK(WaitForSingleObject(e, 0) == WAIT_OBJECT_0);
	HANDLE e2 = SCardAccessStartedEvent();
	CHECK(e2 == e);
	SCardReleaseStartedEvent();
	SCardReleaseStartedEvent();
	e = SCardAccessStartedEvent();
	CHECK(e != NULL && WaitForSingleObject(e, 0) == WAIT_OBJECT_0);
	SCardReleaseStartedEvent();
}

/* Every call that takes a context, with a (non-zero) context that is not one. */
static void bad_context_calls(SCARDCONTEXT c, LONG want)
{
	char buf[128];
	WCHAR wbuf[128];
	DWORD len = sizeof buf, type = 0, proto = 0;
	SCARDHANDLE h = 0;
	SCARD_READERSTATEA rs = {.szReader = READER_A, .dwCurrentState = SCARD_STATE_UNAWARE};
	SCARD_READERSTATEW rsw = {.szReader = READER_W, .dwCurrentState = SCARD_STATE_UNAWARE};
	BYTE data[8] = {1, 2, 3};

	/* Windows documents ERROR_INVALID_HANDLE for this call. */
	EXPECT(SCardIsValidContext(c), want == E_BADHANDLE ? (LONG)ERROR_INVALID_HANDLE : want);
	EXPECT(SCardCancel(c), want);
	EXPECT(SCardAudit(c, 0), want);
	EXPECT(SCardListReadersA(c, NULL, buf, &len), want);
	len = 128;
	EXPECT(SCardListReadersW(c, NULL, wbuf, &len), want);
	len = 128;
	EXPECT(SCardListReaderGroupsA(c, buf, &len), want);
	len = 128;
	EXPECT(SCardListReaderGroupsW(c, wbuf, &len), want);
	len = 128;
	EXPECT(SCardListCardsA(c, NULL, NULL, 0, buf, &len), want);
	len = 128;
	EXPECT(SCardListCardsW(c, NULL, NULL, 0, wbuf, &len), want);
	len = 128;
	EXPECT(SCardGetCardTypeProviderNameA(c, CARD_A, SCARD_PROVIDER_CSP, buf, &len), want);
	len = 128;
	EXPECT(SCardGetCardTypeProviderNameW(c, CARD_W, SCARD_PROVIDER_CSP, wbuf, &len), want);
	EXPECT(SCardGetDeviceTypeIdA(c, READER_A, &type), want);
	EXPECT(SCardGetDeviceTypeIdW(c, READER_W, &type), want);
	EXPECT(SCardGetStatusChangeA(c, 0, &rs, 1), want);
	EXPECT(SCardGetStatusChangeW(c, 0, &rsw, 1), want);
	EXPECT(SCardGetStatusChangeA(c, 0, NULL, 0), want);
	EXPECT(SCardGetStatusChangeW(c, INFINITE, NULL, 0), want);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), want);
	EXPECT(SCardConnectW(c, READER_W, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), want);
	len = sizeof buf;
	EXPECT(SCardReadCacheA(c, &CARD_ID, 0, "Cached_CardProperty_Cache Mode_0", (PBYTE)buf, &len), want);
	len = sizeof buf;
	EXPECT(SCardReadCacheW(c, &CARD_ID, 0, L"Cached_CardProperty_Cache Mode_0", (PBYTE)buf, &len), want);
	EXPECT(SCardWriteCacheA(c, &CARD_ID, 1, "abuse", data, sizeof data), want);
	EXPECT(SCardWriteCacheW(c, &CARD_ID, 1, L"abuse", data, sizeof data), want);
	EXPECT(SCardReleaseContext(c), want);
}

/* Every call that takes a card handle, with a handle that is not one. */
static void bad_handle_calls(SCARDHANDLE h, LONG want)
{
	BYTE r[64];
	DWORD rl = sizeof r, proto = 0, state = 0, n = 0;
	char name[64];
	WCHAR wname[64];
	DWORD nl = sizeof name;
	BYTE atr[36];
	DWORD al = sizeof atr;

	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), want);
	EXPECT(SCardBeginTransaction(h), want);
	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), want);
	EXPECT(SCardStatusA(h, name, &nl, &state, &proto, atr, &al), want);
	nl = 64;
	al = sizeof atr;
	EXPECT(SCardStatusW(h, wname, &nl, &state, &proto, atr, &al), want);
	EXPECT(SCardStatusA(h, NULL, NULL, NULL, NULL, NULL, NULL), want);
	EXPECT(SCardStatusW(h, NULL, NULL, NULL, NULL, NULL, NULL), want);
	EXPECT(SCardTransmit(h, SCARD_PCI_T1, SELECT_PIV, sizeof SELECT_PIV, NULL, r, &rl), want);
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, &n), want);
	rl = sizeof r;
	EXPECT(SCardGetAttrib(h, SCARD_ATTR_VENDOR_NAME, r, &rl), want);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), h == 0 ? (LONG)ERROR_INVALID_HANDLE : want);
}

/* hContext 0: the database queries take it (no context), the rest refuse it. */
static void null_context(int readers)
{
	char buf[256];
	WCHAR wbuf[256];
	DWORD len, type;
	SCARDHANDLE h = 0;
	DWORD proto;
	SCARD_READERSTATEA rs = {.szReader = READER_A};
	LONG list_want = readers ? OK : (LONG)SCARD_E_NO_READERS_AVAILABLE;

	len = sizeof buf;
	EXPECT(SCardListReadersA(0, NULL, buf, &len), list_want);
	len = 256;
	EXPECT(SCardListReadersW(0, NULL, wbuf, &len), list_want);
	len = sizeof buf;
	EXPECT(SCardListReaderGroupsA(0, buf, &len), OK);
	len = 256;
	EXPECT(SCardListReaderGroupsW(0, wbuf, &len), OK);
	len = sizeof buf;
	EXPECT(SCardListCardsA(0, NULL, NULL, 0, buf, &len), OK);
	CHECK(strcmp(buf, CARD_A) == 0);
	len = 256;
	EXPECT(SCardGetCardTypeProviderNameW(0, CARD_W, SCARD_PROVIDER_CARD_MODULE, wbuf, &len), OK);
	CHECK(wcscmp(wbuf, L"msclmd.dll") == 0 && len == 11);
	/* Memory allocated with no context is freed with none. */
	char *p = NULL;
	len = SCARD_AUTOALLOCATE;
	got_auto(EXPECT(SCardListCardsA(0, NULL, NULL, 0, (LPSTR)&p, &len), OK));
	FREE_AUTO(0, p);

	EXPECT(SCardIsValidContext(0), (LONG)ERROR_INVALID_HANDLE);
	/* Windows answers handle 0 here with the Win32 code. */
	EXPECT(SCardCancel(0), (LONG)ERROR_INVALID_HANDLE);
	EXPECT(SCardAudit(0, 0), E_BADHANDLE);
	EXPECT(SCardReleaseContext(0), (LONG)ERROR_INVALID_HANDLE);
	EXPECT(SCardGetDeviceTypeIdA(0, READER_A, &type), E_BADHANDLE);
	EXPECT(SCardGetStatusChangeA(0, 0, &rs, 1), E_BADHANDLE);
	EXPECT(SCardGetStatusChangeA(0, 0, NULL, 0), E_BADHANDLE);
	EXPECT(SCardConnectA(0, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), E_BADHANDLE);
	len = sizeof buf;
	EXPECT(SCardReadCacheA(0, &CARD_ID, 0, "x", (PBYTE)buf, &len), E_BADHANDLE);
	EXPECT(SCardWriteCacheW(0, &CARD_ID, 0, L"x", (PBYTE)buf, 1), E_BADHANDLE);
	bad_handle_calls(0, E_BADHANDLE);
}

static void contexts(int with_card)
{
	SCARDCONTEXT c = 0;

	EXPECT(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, NULL), E_PARAM);
	EXPECT(SCardEstablishContext(3, NULL, NULL, &c), E_VALUE);
	EXPECT(SCardEstablishContext((DWORD)-1, NULL, NULL, &c), E_VALUE);
	CHECK(c == 0);
	const DWORD scopes[] = {SCARD_SCOPE_USER, SCARD_SCOPE_TERMINAL, SCARD_SCOPE_SYSTEM};
	for (size_t i = 0; i < 3; i++) {
		int junk = 42;
		EXPECT(SCardEstablishContext(scopes[i], &junk, &junk, &c), OK);
		EXPECT(SCardIsValidContext(c), OK);
		EXPECT(SCardCancel(c), OK); /* nobody waiting: no effect */
		EXPECT(SCardAudit(c, 1), OK);
		/* The same value with bits above 32: not a context (no truncation). */
		bad_context_calls(c | 0x100000000ULL, E_BADHANDLE);
		EXPECT(SCardIsValidContext(c), OK);
		EXPECT(SCardReleaseContext(c), OK);
		bad_context_calls(c, E_BADHANDLE); /* stale */
	}
	for (size_t i = 0; i < NFOREIGN; i++)
		bad_context_calls(FOREIGN[i], E_BADHANDLE);
	for (int i = 0; i < 100; i++) {
		ULONG_PTR r = ((ULONG_PTR)rnd() << 32 | rnd()) | 1;
		EXPECT(SCardIsValidContext(r), (LONG)ERROR_INVALID_HANDLE);
		EXPECT(SCardReleaseContext(r), E_BADHANDLE);
	}
	null_context(with_card);

	if (!with_card)
		return;
	/* A card handle is not a context, and a context is not a card handle. */
	c = establish();
	SCARDHANDLE h = connect_shared(c);
	EXPECT(SCardIsValidContext(h), (LONG)ERROR_INVALID_HANDLE);
	EXPECT(SCardReleaseContext(h), E_BADHANDLE);
	bad_handle_calls(c, E_BADHANDLE);
	bad_handle_calls(h | 0x100000000ULL, E_BADHANDLE);
	EXPECT(SCardIsValidContext(c), OK);
	/* Releasing a context closes its card handles. */
	SCARDHANDLE h2 = connect_shared(c);
	EXPECT(SCardReleaseContext(c), OK);
	bad_handle_calls(h, E_BADHANDLE);
	bad_handle_calls(h2, E_BADHANDLE);
}

static void listing(int readers)
{
	SCARDCONTEXT c = establish();
	static const char readers_a[] = READER_A "\0";
	static const WCHAR readers_w[] = READER_W L"\0";
	static const char groups_a[] = "SCard$DefaultReaders\0";
	static const WCHAR groups_w[] = L"SCard$DefaultReaders\0";
	static const char cards_a[] = CARD_A "\0";
	static const WCHAR cards_w[] = CARD_W L"\0";
	struct target t = {.c = c};
	DWORD len;
	char buf[256];
	WCHAR wbuf[256];

	if (readers) {
		buffer_rules("SCardListReadersA", f_readers_a, &t, 1, readers_a, sizeof readers_a);
		buffer_rules("SCardListReadersW", f_readers_w, &t, 2, readers_w, sizeof readers_w / 2);
	}
	buffer_rules("SCardListReaderGroupsA", f_groups_a, &t, 1, groups_a, sizeof groups_a);
	buffer_rules("SCardListReaderGroupsW", f_groups_w, &t, 2, groups_w, sizeof groups_w / 2);
	buffer_rules("SCardListCardsA", f_cards_a, &t, 1, cards_a, sizeof cards_a);
	buffer_rules("SCardListCardsW", f_cards_w, &t, 2, cards_w, sizeof cards_w / 2);
	/* The ATR / interface filters do not matter: every card served is a PIV card. */
	BYTE atr[36] = {0x3B};
	GUID iface = {0};
	len = sizeof buf;
	EXPECT(SCardListCardsA(c, card_atr_len ? card_atr : atr, &iface, 1, buf, &len), OK);
	CHECK(len == sizeof cards_a && memcmp(buf, cards_a, len) == 0);

	static const struct {
		DWORD id;
		const char *a;
		const WCHAR *w;
	} providers[] = {
		{SCARD_PROVIDER_CSP, "Microsoft Base Smart Card Crypto Provider",
		 L"Microsoft Base Smart Card Crypto Provider"},
		{SCARD_PROVIDER_KSP, "Microsoft Smart Card Key Storage Provider",
		 L"Microsoft Smart Card Key Storage Provider"},
		{SCARD_PROVIDER_CARD_MODULE, "msclmd.dll", L"msclmd.dll"},
	};
	for (size_t i = 0; i < 3; i++) {
		t.id = providers[i].id;
		buffer_rules("SCardGetCardTypeProviderNameA", f_provider_a, &t, 1, providers[i].a,
			     (DWORD)strlen(providers[i].a) + 1);
		buffer_rules("SCardGetCardTypeProviderNameW", f_provider_w, &t, 2, providers[i].w,
			     (DWORD)wcslen(providers[i].w) + 1);
	}
	len = sizeof buf;
	EXPECT(SCardGetCardTypeProviderNameA(c, NULL, SCARD_PROVIDER_CSP, buf, &len), E_PARAM);
	len = 256;
	EXPECT(SCardGetCardTypeProviderNameW(c, NULL, SCARD_PROVIDER_CSP, wbuf, &len), E_PARAM);
	len = sizeof buf;
	EXPECT(SCardGetCardTypeProviderNameA(c, "No such card", SCARD_PROVIDER_CSP, buf, &len),
	       SCARD_E_UNKNOWN_CARD);
	len = 256;
	EXPECT(SCardGetCardTypeProviderNameW(c, L"", SCARD_PROVIDER_KSP, wbuf, &len), SCARD_E_UNKNOWN_CARD);
	/* The card name compares without case, as Windows' database does. */
	len = sizeof buf;
	EXPECT(SCardGetCardTypeProviderNameA(c, "identity device (nist sp 800-73 [piv])", SCARD_PROVIDER_CARD_MODULE,
					     buf, &len), OK);
	len = sizeof buf;
	EXPECT(SCardGetCardTypeProviderNameA(c, CARD_A, SCARD_PROVIDER_PRIMARY, buf, &len), E_UNSUP);
	const DWORD bad_ids[] = {0, 4, 0x80000000, 0x80000002, (DWORD)-1};
	for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
		len = 256;
		EXPECT(SCardGetCardTypeProviderNameW(c, CARD_W, bad_ids[i], wbuf, &len), E_PARAM);
	}

	/* Groups. */
	len = sizeof buf;
	LONG in_group = readers ? OK : (LONG)SCARD_E_NO_READERS_AVAILABLE;
	EXPECT(SCardListReadersA(c, "SCard$DefaultReaders\0", buf, &len), in_group);
	len = sizeof buf;
	EXPECT(SCardListReadersA(c, "SCard$AllReaders\0Other\0", buf, &len), in_group);
	len = 256;
	EXPECT(SCardListReadersW(c, L"Other\0scard$localreaders\0", wbuf, &len), in_group);
	len = 256;
	EXPECT(SCardListReadersW(c, L"\0", wbuf, &len), SCARD_E_NO_READERS_AVAILABLE);
	len = sizeof buf;
	EXPECT(SCardListReadersA(c, "No such group\0", buf, &len), SCARD_E_NO_READERS_AVAILABLE);
	len = 256;
	EXPECT(SCardListReadersW(c, L"No such group\0", wbuf, &len), SCARD_E_NO_READERS_AVAILABLE);
	if (!readers) {
		len = sizeof buf;
		EXPECT(SCardListReadersA(c, NULL, buf, &len), SCARD_E_NO_READERS_AVAILABLE);
		len = 0;
		EXPECT(SCardListReadersW(c, NULL, NULL, &len), SCARD_E_NO_READERS_AVAILABLE);
		char *p = NULL;
		len = SCARD_AUTOALLOCATE;
		EXPECT(SCardListReadersA(c, NULL, (LPSTR)&p, &len), SCARD_E_NO_READERS_AVAILABLE);
		CHECK(p == NULL);
	}

	/* SCardFreeMemory refuses what it did not hand out (NULL included)
	 * rather than passing it to a heap. */
	EXPECT(SCardFreeMemory(c, NULL), E_PARAM);
	EXPECT(SCardFreeMemory(c, buf), E_PARAM);
	void *heap = malloc(16);
	EXPECT(SCardFreeMemory(c, heap), E_PARAM);
	free(heap);
	heap = HeapAlloc(GetProcessHeap(), 0, 16);
	EXPECT(SCardFreeMemory(c, heap), E_PARAM);
	HeapFree(GetProcessHeap(), 0, heap);
	EXPECT(SCardFreeMemory(c, (void *)1), E_PARAM);
	EXPECT(SCardFreeMemory(0, (void *)(ULONG_PTR)-1), E_PARAM);
	/* Memory handed out stays releasable after its context is gone, and
	 * one block's interior is not the block. */
	char *p = NULL;
	len = SCARD_AUTOALLOCATE;
	got_auto(EXPECT(SCardListReaderGroupsA(c, (LPSTR)&p, &len), OK));
	EXPECT(SCardReleaseContext(c), OK);
	if (p)
		EXPECT(SCardFreeMemory(c, p + 1), E_PARAM);
	FREE_AUTO(c, p);
}

/* SCardGetStatusChangeA and W share the rules; `fast` leaves out waits. */
#define STATUS_CHANGE_RULES(RS, SC, RNAME, PNPNAME, UNKNOWN_NAME, EMPTY_NAME)                          \
	do {                                                                                           \
		RS rs[3];                                                                              \
		memset(rs, 0, sizeof rs);                                                              \
		EXPECT(SC(c, 0, NULL, 0), OK);                                                         \
		EXPECT(SC(c, INFINITE, NULL, 0), OK);                                                  \
		EXPECT(SC(c, 0, NULL, 1), E_PARAM);                                                    \
		EXPECT(SC(c, INFINITE, NULL, 3), E_PARAM);                                             \
		EXPECT(SC(c, 0, rs, 1), E_VALUE); /* szReader NULL */                                  \
		rs[0].szReader = RNAME;                                                                \
		EXPECT(SC(c, 0, rs, 2), E_VALUE); /* the second one's */                               \
		rs[0].dwCurrentState = SCARD_STATE_UNAWARE;                                            \
		rs[0].cbAtr = 999;                                                                     \
		memset(rs[0].rgbAtr, 0xEE, sizeof rs[0].rgbAtr);                                       \
		EXPECT(SC(c, 0, rs, 1), OK);                                                           \
		if (with_card) {                                                                       \
			CHECK((rs[0].dwEventState & 0xFFFF) == (SCARD_STATE_PRESENT | SCARD_STATE_CHANGED)); \
			CHECK(rs[0].cbAtr == card_atr_len && memcmp(rs[0].rgbAtr, card_atr, card_atr_len) == 0); \
		} else {                                                                               \
			CHECK(rs[0].dwEventState == (SCARD_STATE_UNKNOWN | SCARD_STATE_CHANGED));      \
			CHECK(rs[0].cbAtr == 0);                                                       \
		}                                                                                      \
		/* Fed back: nothing changes, so it times out, and says so. */                         \
		rs[0].dwCurrentState = rs[0].dwEventState & ~(DWORD)SCARD_STATE_CHANGED;               \
		EXPECT(SC(c, 0, rs, 1), SCARD_E_TIMEOUT);                                              \
		if (!fast)                                                                             \
			EXPECT(SC(c, 30, rs, 1), SCARD_E_TIMEOUT);                                     \
		CHECK((rs[0].dwEventState & SCARD_STATE_CHANGED) == 0);                                \
		/* Unknown readers, the PnP pseudo-reader (HIWORD: number of readers). */              \
		rs[1].szReader = UNKNOWN_NAME;                                                         \
		rs[1].dwCurrentState = 0;                                                              \
		rs[2].szReader = PNPNAME;                                                              \
		rs[2].dwCurrentState = 0;                                                              \
		EXPECT(SC(c, 0, rs, 3), OK);                                                           \
		CHECK(rs[1].dwEventState == (SCARD_STATE_UNKNOWN | SCARD_STATE_CHANGED));              \
		CHECK((rs[2].dwEventState >> 16) == (DWORD)with_card);                                 \
		CHECK(!!(rs[2].dwEventState & SCARD_STATE_CHANGED) == with_card);                      \
		/* Fed back, all three: no change. */                                                  \
		for (int i_ = 0; i_ < 3; i_++)                                                         \
			rs[i_].dwCurrentState = rs[i_].dwEventState & ~(DWORD)SCARD_STATE_CHANGED;     \
		EXPECT(SC(c, 0, rs, 3), SCARD_E_TIMEOUT);                                              \
		rs[1].szReader = EMPTY_NAME;                                                           \
		rs[1].dwCurrentState = 0;                                                              \
		EXPECT(SC(c, 0, &rs[1], 1), OK);                                                       \
		CHECK(rs[1].dwEventState & SCARD_STATE_UNKNOWN);                                       \
		/* Ignored entries change nothing, and are answered in kind. */                        \
		rs[0].dwCurrentState = SCARD_STATE_IGNORE;                                             \
		rs[1].dwCurrentState = SCARD_STATE_IGNORE;                                             \
		EXPECT(SC(c, fast ? 0 : 40, rs, 2), SCARD_E_TIMEOUT);                                  \
		CHECK(rs[0].dwEventState == SCARD_STATE_IGNORE);                                       \
		rs[1].dwCurrentState = SCARD_STATE_UNAWARE;                                            \
		rs[1].szReader = RNAME;                                                                \
		EXPECT(SC(c, 0, rs, 2), OK);                                                           \
		CHECK(rs[0].dwEventState == SCARD_STATE_IGNORE);                                       \
		CHECK(rs[1].dwEventState & SCARD_STATE_CHANGED);                                       \
	} while (0)

static void status_change(int with_card, int fast)
{
	SCARDCONTEXT c = establish();
	/* More entries than Windows has readers (MAXIMUM_SMARTCARD_READERS 10). */
	static SCARD_READERSTATEA many[40];
	memset(many, 0, sizeof many);
	for (int i = 0; i < 40; i++) {
		many[i].szReader = i % 3 == 2 ? PNP_A : i % 3 ? "No such reader" : READER_A;
		many[i].cbAtr = (DWORD)-1;
	}
	EXPECT(SCardGetStatusChangeA(c, 0, many, 40), OK);
	for (int i = 0; i < 40; i++) {
		CHECK(many[i].dwEventState & SCARD_STATE_CHANGED || (i % 3 == 2 && !with_card));
		CHECK(many[i].cbAtr <= sizeof many[i].rgbAtr);
	}
	STATUS_CHANGE_RULES(SCARD_READERSTATEA, SCardGetStatusChangeA, READER_A, PNP_A, "No such reader", "");
	STATUS_CHANGE_RULES(SCARD_READERSTATEW, SCardGetStatusChangeW, READER_W, PNP_W, L"No such reader", L"");
	EXPECT(SCardReleaseContext(c), OK);
}

static void connect_rules(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = 0, h2 = 0;
	DWORD proto = 0;

	EXPECT(SCardConnectA(c, NULL, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), E_PARAM);
	EXPECT(SCardConnectW(c, NULL, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), E_PARAM);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, NULL, &proto), E_PARAM);
	EXPECT(SCardConnectW(c, READER_W, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, NULL, NULL), E_PARAM);
	const DWORD bad_share[] = {0, 4, (DWORD)-1};
	for (size_t i = 0; i < 3; i++) {
		EXPECT(SCardConnectA(c, READER_A, bad_share[i], SCARD_PROTOCOL_T1, &h, &proto), E_VALUE);
		EXPECT(SCardConnectW(c, READER_W, bad_share[i], SCARD_PROTOCOL_T1, &h, &proto), E_VALUE);
	}
	EXPECT(SCardConnectA(c, "No such reader", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	       SCARD_E_UNKNOWN_READER);
	EXPECT(SCardConnectW(c, L"", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), SCARD_E_UNKNOWN_READER);
	EXPECT(SCardConnectA(c, PNP_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), SCARD_E_UNKNOWN_READER);
	EXPECT(SCardConnectW(c, PNP_W, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), SCARD_E_UNKNOWN_READER);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto), SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardConnectW(c, READER_W, SCARD_SHARE_SHARED, SCARD_PROTOCOL_RAW, &h, &proto), SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_RAW, &h, &proto),
	       SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, 0, &h, &proto), E_VALUE);
	CHECK(h == 0);

	/* pdwActiveProtocol is optional (as in Windows); the name compares without case. */
	EXPECT(SCardConnectW(c, L"virtual piv reader 0", SCARD_SHARE_SHARED, SCARD_PROTOCOL_Tx, &h, NULL), OK);
	CHECK(h != 0);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1 | SCARD_PROTOCOL_RAW, &h, &proto), OK);
	CHECK(proto == SCARD_PROTOCOL_T1);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);

	/* Sharing. */
	h = connect_shared(c);
	EXPECT(SCardConnectW(c, READER_W, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &h2, &proto),
	       SCARD_E_SHARING_VIOLATION);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardConnectW(c, READER_W, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &h, &proto), OK);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h2, &proto),
	       SCARD_E_SHARING_VIOLATION);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_DIRECT, 0, &h2, &proto), SCARD_E_SHARING_VIOLATION);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);

	/* A direct connection without a protocol has none to transmit with. */
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_DIRECT, 0, &h, &proto), OK);
	CHECK(proto == SCARD_PROTOCOL_UNDEFINED);
	EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, NULL), SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);

	/* Reconnect. */
	h = connect_shared(c);
	h2 = connect_shared(c);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, NULL), OK);
	EXPECT(SCardReconnect(h, 0, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), E_VALUE);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, 4, &proto), E_VALUE);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, (DWORD)-1, &proto), E_VALUE);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, SCARD_LEAVE_CARD, &proto),
	       SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, 0, SCARD_LEAVE_CARD, &proto), E_VALUE);
	EXPECT(SCardReconnect(h, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto),
	       SCARD_E_SHARING_VIOLATION);
	proto = 0;
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_Tx, SCARD_RESET_CARD, &proto), OK);
	CHECK(proto == SCARD_PROTOCOL_T1);
	/* The other handle sees the reset until it reconnects. */
	EXPECT(tx(h2, SELECT_PIV, sizeof SELECT_PIV, NULL), SCARD_W_RESET_CARD);
	EXPECT(SCardBeginTransaction(h2), SCARD_W_RESET_CARD);
	EXPECT(SCardStatusA(h2, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
	EXPECT(SCardStatusW(h2, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
	EXPECT(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), OK);
	EXPECT(tx(h2, SELECT_PIV, sizeof SELECT_PIV, NULL), OK);
	EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, NULL), OK);
	EXPECT(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_UNPOWER_CARD, &proto), OK);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_EJECT_CARD, &proto), OK);
	EXPECT(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), OK);

	/* Disconnect. */
	EXPECT(SCardDisconnect(h, 4), E_VALUE);
	EXPECT(SCardDisconnect(h, (DWORD)-1), E_VALUE);
	EXPECT(SCardDisconnect(h, SCARD_RESET_CARD), OK);
	bad_handle_calls(h, E_BADHANDLE); /* stale */
	EXPECT(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), OK);
	EXPECT(SCardDisconnect(h2, SCARD_UNPOWER_CARD), OK);
	h = connect_shared(c);
	EXPECT(SCardDisconnect(h, SCARD_EJECT_CARD), OK);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), E_BADHANDLE);
	for (size_t i = 0; i < NFOREIGN; i++)
		bad_handle_calls(FOREIGN[i], E_BADHANDLE);
	EXPECT(SCardReleaseContext(c), OK);
}

static void transactions(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = connect_shared(c), h2 = connect_shared(c);
	DWORD proto;

	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
	EXPECT(SCardBeginTransaction(h), OK);
	EXPECT(SCardBeginTransaction(h), OK); /* nested */
	EXPECT(SCardEndTransaction(h2, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
	EXPECT(SCardEndTransaction(h, 4), E_VALUE);
	EXPECT(SCardEndTransaction(h, (DWORD)-1), E_VALUE);
	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
	EXPECT(SCardBeginTransaction(h), OK);
	EXPECT(SCardEndTransaction(h, SCARD_RESET_CARD), OK);
	EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, NULL), OK); /* the resetting handle goes on */
	EXPECT(SCardEndTransaction(h2, SCARD_LEAVE_CARD), SCARD_W_RESET_CARD);
	EXPECT(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), OK);
	EXPECT(SCardBeginTransaction(h), OK);
	EXPECT(SCardEndTransaction(h, SCARD_UNPOWER_CARD), OK);
	EXPECT(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), OK);
	/* A disconnect inside a transaction ends it. */
	EXPECT(SCardBeginTransaction(h), OK);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardBeginTransaction(h2), OK);
	EXPECT(SCardEndTransaction(h2, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardReleaseContext(c), OK);
}

static void status_rules(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = connect_shared(c);
	static const char name_a[] = READER_A "\0";
	static const WCHAR name_w[] = READER_W L"\0";
	struct target t = {.c = c, .h = h, .len_optional = 1};
	DWORD nl, al, state = 0, proto = 0;

	EXPECT(SCardStatusA(h, NULL, NULL, NULL, NULL, NULL, NULL), OK);
	EXPECT(SCardStatusW(h, NULL, NULL, NULL, NULL, NULL, NULL), OK);
	EXPECT(SCardStatusA(h, NULL, NULL, &state, &proto, NULL, NULL), OK);
	CHECK(state == SCARD_SPECIFIC);
	CHECK(proto == SCARD_PROTOCOL_T1);
	state = proto = 0;
	EXPECT(SCardStatusW(h, NULL, NULL, &state, &proto, NULL, NULL), OK);
	CHECK(state == SCARD_SPECIFIC && proto == SCARD_PROTOCOL_T1);
	nl = al = 0;
	EXPECT(SCardStatusW(h, NULL, &nl, NULL, NULL, NULL, &al), OK); /* lengths only */
	CHECK(nl == sizeof name_w / 2 && al == card_atr_len);
	/* A buffer without its length is ignored. */
	char dummy[8];
	EXPECT(SCardStatusA(h, dummy, NULL, NULL, NULL, (LPBYTE)dummy, NULL), OK);

	/* The reader names are a multi-string (in characters), the ATR bytes. */
	buffer_rules("SCardStatusA names", f_status_name_a, &t, 1, name_a, sizeof name_a);
	buffer_rules("SCardStatusW names", f_status_name_w, &t, 2, name_w, sizeof name_w / 2);
	buffer_rules("SCardStatus ATR", f_status_atr, &t, 1, card_atr, card_atr_len);

	/* Both at once, both autoallocated. */
	char *name = NULL;
	BYTE *atr = NULL;
	nl = al = SCARD_AUTOALLOCATE;
	LONG rv = EXPECT(SCardStatusA(h, (LPSTR)&name, &nl, &state, &proto, (LPBYTE)&atr, &al), OK);
	CHECK(name && atr && nl == sizeof name_a && al == card_atr_len && memcmp(name, name_a, nl) == 0 &&
	      memcmp(atr, card_atr, al) == 0);
	if (rv == OK) {
		InterlockedAdd(&outstanding, 2);
		FREE_AUTO(c, name);
		FREE_AUTO(0, atr);
	}
	/* A short ATR buffer after a good name: the name is written, the call fails. */
	WCHAR nb[64];
	BYTE ab[2];
	nl = 64;
	al = sizeof ab;
	EXPECT(SCardStatusW(h, nb, &nl, NULL, NULL, ab, &al), E_BUF);
	CHECK(al == card_atr_len);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardReleaseContext(c), OK);
}

/* Any command, but none that changes the card's stored state (PIN tries,
 * keys, objects), so runs repeat exactly. */
static void harmless(BYTE *cmd, DWORD n)
{
	static const BYTE persistent[] = {0x20, 0x24, 0x2C, 0x47, 0xDB, 0xF6, 0xFA, 0xFB, 0xFE, 0xFF};
	if (n >= 2 && memchr(persistent, cmd[1], sizeof persistent))
		cmd[1] = 0xCB;
}

static void transmit_rules(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = connect_shared(c);
	static BYTE r[1024];
	DWORD rl;
	SCARD_IO_REQUEST rpci = {0, 0};
	SCARD_IO_REQUEST bad_pci = {0, sizeof(SCARD_IO_REQUEST)};

#define T(send, n, out, len) SCardTransmit(h, SCARD_PCI_T1, send, n, NULL, out, len)
	rl = sizeof r;
	/* Like Windows, a NULL send PCI means the card's protocol. */
	EXPECT(SCardTransmit(h, NULL, SELECT_PIV, sizeof SELECT_PIV, NULL, r, &rl), OK);
	CHECK(rl >= 2 && r[rl - 2] == 0x90 && r[rl - 1] == 0x00);
	rl = sizeof r;
	EXPECT(T(NULL, sizeof SELECT_PIV, r, &rl), E_PARAM);
	EXPECT(T(SELECT_PIV, sizeof SELECT_PIV, NULL, &rl), E_PARAM);
	EXPECT(T(SELECT_PIV, sizeof SELECT_PIV, r, NULL), E_PARAM);
	EXPECT(T(SELECT_PIV, 0, r, &rl), E_PARAM);
	EXPECT(T(NULL, 0, NULL, NULL), E_PARAM);
	/* Lengths past any APDU, with a buffer that is much shorter. */
	EXPECT(T(SELECT_PIV, (DWORD)-1, r, &rl), E_PARAM);
	EXPECT(T(SELECT_PIV, MAX_APDU + 1, r, &rl), E_PARAM);
	EXPECT(T(SELECT_PIV, 0x80000000, r, &rl), E_PARAM);
	/* Protocols the handle does not speak. */
	EXPECT(SCardTransmit(h, SCARD_PCI_RAW, SELECT_PIV, sizeof SELECT_PIV, NULL, r, &rl), SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardTransmit(h, &bad_pci, SELECT_PIV, sizeof SELECT_PIV, NULL, r, &rl), SCARD_E_PROTO_MISMATCH);

	rl = sizeof r;
	EXPECT(SCardTransmit(h, SCARD_PCI_T1, SELECT_PIV, sizeof SELECT_PIV, &rpci, r, &rl), OK);
	CHECK(rl >= 2 && r[rl - 2] == 0x90 && r[rl - 1] == 0x00);
	CHECK(rpci.dwProtocol == SCARD_PROTOCOL_T1 && rpci.cbPciLength == sizeof rpci);
	rl = sizeof r;
	EXPECT(T(GET_CHUID, sizeof GET_CHUID, r, &rl), OK);
	const DWORD chuid_len = rl;
	CHECK(chuid_len > 20 && r[chuid_len - 2] == 0x90);
	/* Tiny receive buffers (ending at the guard page): the needed length comes back. */
	for (DWORD n = 0; n < chuid_len; n += (n < 4 ? 1 : 17)) {
		BYTE *b = guarded(n);
		rl = n;
		EXPECT(T(GET_CHUID, sizeof GET_CHUID, b, &rl), E_BUF);
		CHECK(rl == chuid_len);
		CHECK(untouched(b, n));
	}
	BYTE *b = guarded(chuid_len);
	rl = chuid_len;
	EXPECT(T(GET_CHUID, sizeof GET_CHUID, b, &rl), OK);
	CHECK(rl == chuid_len && memcmp(b, r, chuid_len) == 0);
	/* SCARD_AUTOALLOCATE is not a length SCardTransmit knows: a big buffer. */
	rl = SCARD_AUTOALLOCATE;
	EXPECT(T(GET_CHUID, sizeof GET_CHUID, r, &rl), OK);
	CHECK(rl == chuid_len);
	/* The command ends at the guard page too: nothing reads past it. */
	BYTE *sel = guarded(sizeof SELECT_PIV);
	memcpy(sel, SELECT_PIV, sizeof SELECT_PIV);
	rl = sizeof r;
	EXPECT(T(sel, sizeof SELECT_PIV, r, &rl), OK);

	/* Garbage of every short length, and the longest APDU: answered with a
	 * status word, never a crash. */
	rnd_state = 11;
	for (DWORD n = 1; n <= 300; n += (n < 16 ? 1 : 7)) {
		BYTE *cmd = malloc(n);
		for (DWORD i = 0; i < n; i++)
			cmd[i] = (BYTE)rnd();
		harmless(cmd, n);
		rl = sizeof r;
		EXPECT(T(cmd, n, r, &rl), OK);
		CHECK(rl >= 2 && rl <= sizeof r);
		free(cmd);
	}
	BYTE *longest = calloc(1, MAX_APDU);
	longest[1] = 0xCB;
	rl = sizeof r;
	EXPECT(T(longest, MAX_APDU, r, &rl), OK);
	CHECK(rl >= 2);
	free(longest);
	unsigned sw = 0;
	EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, &sw), OK);
	CHECK(sw == 0x9000);
#undef T

	/* SCardControl. */
	DWORD n = 77;
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, &n), OK);
	CHECK(n == 0);
	n = 77;
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, NULL, 0, &n), OK);
	CHECK(n == 0);
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, r, 4, r, 0, &n), OK);
	/* lpBytesReturned is required, as in Windows. */
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, NULL), E_PARAM);
	EXPECT(SCardControl(h, SCARD_CTL_CODE(1), NULL, 0, r, sizeof r, &n), E_UNSUP);
	EXPECT(SCardControl(h, 0, NULL, 0, NULL, 0, NULL), E_UNSUP);
	EXPECT(SCardControl(h, (DWORD)-1, r, 10, r, sizeof r, &n), E_UNSUP);
	/* pcsc-lite's code for the same request is not Windows'. */
	EXPECT(SCardControl(h, 0x42000000 + 3400, NULL, 0, r, sizeof r, &n), E_UNSUP);

	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardReleaseContext(c), OK);
}

static void attributes(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = connect_shared(c);
	struct target t = {.c = c, .h = h};
	static const DWORD ids[] = {
		SCARD_ATTR_VENDOR_NAME, SCARD_ATTR_VENDOR_IFD_TYPE, SCARD_ATTR_VENDOR_IFD_VERSION,
		SCARD_ATTR_VENDOR_IFD_SERIAL_NO, SCARD_ATTR_CHANNEL_ID, SCARD_ATTR_PROTOCOL_TYPES,
		SCARD_ATTR_MAX_IFSD, SCARD_ATTR_CHARACTERISTICS, SCARD_ATTR_CURRENT_PROTOCOL_TYPE,
		SCARD_ATTR_ICC_PRESENCE, SCARD_ATTR_ICC_INTERFACE_STATUS, SCARD_ATTR_ATR_STRING,
		SCARD_ATTR_ICC_TYPE_PER_ATR, SCARD_ATTR_MAXINPUT, SCARD_ATTR_DEVICE_UNIT,
		SCARD_ATTR_DEVICE_IN_USE, SCARD_ATTR_DEVICE_FRIENDLY_NAME_A, SCARD_ATTR_DEVICE_SYSTEM_NAME_A,
		SCARD_ATTR_DEVICE_FRIENDLY_NAME_W, SCARD_ATTR_DEVICE_SYSTEM_NAME_W,
	};
	static BYTE value[256];
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		DWORD len = sizeof value;
		EXPECT(SCardGetAttrib(h, ids[i], value, &len), OK);
		CHECK(len > 0 && len < 256);
		t.id = ids[i];
		buffer_rules("SCardGetAttrib", f_attrib, &t, 1, value, len);
		/* What some of them must say. */
		switch (ids[i]) {
		case SCARD_ATTR_VENDOR_NAME:
			CHECK(len == 12 && memcmp(value, "Virtual PIV", 12) == 0);
			break;
		case SCARD_ATTR_CURRENT_PROTOCOL_TYPE:
			CHECK(len == 4 && *(DWORD *)value == SCARD_PROTOCOL_T1);
			break;
		case SCARD_ATTR_ATR_STRING:
			CHECK(len == card_atr_len && memcmp(value, card_atr, len) == 0);
			break;
		case SCARD_ATTR_MAXINPUT:
			CHECK(len == 4 && *(DWORD *)value == MAX_APDU);
			break;
		case SCARD_ATTR_DEVICE_FRIENDLY_NAME_A:
			CHECK(len == sizeof READER_A && memcmp(value, READER_A, len) == 0);
			break;
		case SCARD_ATTR_DEVICE_SYSTEM_NAME_W:
			CHECK(len == sizeof READER_W && memcmp(value, READER_W, len) == 0);
			break;
		}
	}
	DWORD len = 16;
	BYTE buf[16];
	EXPECT(SCardGetAttrib(h, 0x12345678, buf, &len), E_UNSUP);
	EXPECT(SCardGetAttrib(h, 0, NULL, &len), E_UNSUP);
	EXPECT(SCardGetAttrib(h, (DWORD)-1, buf, &len), E_UNSUP);
	EXPECT(SCardGetAttrib(h, SCARD_ATTR_CURRENT_CLK, buf, &len), E_UNSUP);

	/* SCardSetAttrib: nothing is settable, whatever the arguments. */
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, NULL, 4), E_UNSUP);
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, buf, 0), E_UNSUP);
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, buf, sizeof buf), E_UNSUP);
	EXPECT(SCardSetAttrib(h, (DWORD)-1, buf, (DWORD)-1), E_UNSUP);
	EXPECT(SCardSetAttrib(0, 0, NULL, 0), E_UNSUP);

	/* A direct connection: no protocol, and the attributes still answer. */
	SCARDHANDLE d = 0;
	DWORD proto = 77;
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_DIRECT, 0, &d, &proto), OK);
	len = sizeof buf;
	EXPECT(SCardGetAttrib(d, SCARD_ATTR_CURRENT_PROTOCOL_TYPE, buf, &len), OK);
	CHECK(len == 4 && *(DWORD *)buf == 0);
	EXPECT(SCardDisconnect(d, SCARD_LEAVE_CARD), OK);
	len = sizeof buf;
	EXPECT(SCardGetAttrib(h, SCARD_ATTR_VENDOR_NAME, buf, &len), E_BADHANDLE);
	EXPECT(SCardReleaseContext(c), OK);
}

/* SCardReadCache / SCardWriteCache (what msclmd.dll calls), A and W. */
static void cache(int with_card)
{
	SCARDCONTEXT c = establish();
	struct target t = {.c = c};
	BYTE buf[64];
	DWORD len;

	/* Pre-built items of the card: found by any freshness. */
	static const char *const names_a[] = {"Cached_CardProperty_Cache Mode_0", "Cached_CardProperty_Capabilities_0",
					      "Cached_CardmodFile\\Cached_Pin_Freshness",
					      "Cached_GeneralFile/mscp/cmapfile", "Cached_GeneralFile/mscp/kxc00"};
	static const WCHAR *const names_w[] = {L"Cached_CardProperty_Cache Mode_0",
					       L"Cached_CardProperty_Capabilities_0",
					       L"Cached_CardmodFile\\Cached_Pin_Freshness",
					       L"Cached_GeneralFile/mscp/cmapfile", L"Cached_GeneralFile/mscp/kxc00"};
	if (with_card) {
		for (size_t i = 0; i < 5; i++) {
			BYTE *item = NULL;
			len = SCARD_AUTOALLOCATE;
			LONG rv = EXPECT(SCardReadCacheW(c, &CARD_ID, 0, (LPWSTR)names_w[i], (PBYTE)&item, &len), OK);
			if (rv != OK)
				continue;
			InterlockedIncrement(&outstanding);
			CHECK(len > 0 && len < 4096);
			t.name = names_a[i];
			t.id = (DWORD)i * 3; /* freshness: pre-built items ignore it */
			buffer_rules("SCardReadCacheA", f_cache_a, &t, 1, item, len);
			t.name = names_w[i];
			buffer_rules("SCardReadCacheW", f_cache_w, &t, 1, item, len);
			/* Properties: cardcf (6 bytes), 6 zero bytes, the value's
			 * length, the value (Cache Mode: 1). */
			if (i == 0)
				CHECK(len == 20 && item[0] == 1 &&
				      memcmp(item + 6, "\0\0\0\0\0\0\4\0\0\0\1\0\0\0", 14) == 0);
			if (i == 2)
				CHECK(len == 2);
			FREE_AUTO(c, item);
		}
	} else {
		len = sizeof buf;
		EXPECT(SCardReadCacheA(c, &CARD_ID, 0, (LPSTR)names_a[0], buf, &len), SCARD_W_CACHE_ITEM_NOT_FOUND);
	}
	len = sizeof buf;
	EXPECT(SCardReadCacheA(c, &CARD_ID, 0, "Cached_GeneralFile/mscp/kxc07", buf, &len),
	       SCARD_W_CACHE_ITEM_NOT_FOUND);
	len = sizeof buf;
	EXPECT(SCardReadCacheW(c, &CARD_ID, 0, L"", buf, &len), SCARD_W_CACHE_ITEM_NOT_FOUND);
	len = sizeof buf;
	EXPECT(SCardReadCacheA(c, NULL, 0, (LPSTR)names_a[0], buf, &len), E_PARAM);
	EXPECT(SCardReadCacheW(c, &CARD_ID, 0, NULL, buf, &len), E_PARAM);
	EXPECT(SCardReadCacheA(c, &CARD_ID, 0, NULL, NULL, NULL), E_PARAM);

	/* Written items come back with the freshness they were written with. */
	static const BYTE data[] = "written by abuse_win";
	EXPECT(SCardWriteCacheA(c, &CARD_ID, 5, "abuse_item", (PBYTE)data, sizeof data), OK);
	t.name = L"abuse_item";
	t.id = 5;
	buffer_rules("SCardReadCacheW written", f_cache_w, &t, 1, data, sizeof data);
	len = sizeof buf;
	EXPECT(SCardReadCacheA(c, &CARD_ID, 6, "abuse_item", buf, &len), SCARD_W_CACHE_ITEM_STALE);
	len = sizeof buf;
	EXPECT(SCardReadCacheA(c, &CARD_ID, 4, "abuse_item", buf, &len), SCARD_W_CACHE_ITEM_STALE);
	/* Another card identifier is another item. */
	UUID other = CARD_ID;
	other.Data4[7] ^= 0xFF;
	len = sizeof buf;
	EXPECT(SCardReadCacheA(c, &other, 5, "abuse_item", buf, &len), SCARD_W_CACHE_ITEM_NOT_FOUND);
	/* Rewritten (W), then empty (NULL with length 0 is an empty item). */
	EXPECT(SCardWriteCacheW(c, &CARD_ID, 7, L"abuse_item", (PBYTE)data, 3), OK);
	len = sizeof buf;
	EXPECT(SCardReadCacheA(c, &CARD_ID, 7, "abuse_item", buf, &len), OK);
	CHECK(len == 3 && memcmp(buf, data, 3) == 0);
	EXPECT(SCardWriteCacheA(c, &CARD_ID, 8, "abuse_item", NULL, 0), OK);
	len = sizeof buf;
	EXPECT(SCardReadCacheW(c, &CARD_ID, 8, L"abuse_item", buf, &len), OK);
	CHECK(len == 0);
	len = 0;
	EXPECT(SCardReadCacheW(c, &CARD_ID, 8, L"abuse_item", NULL, &len), OK);
	CHECK(len == 0);
	BYTE *p = NULL;
	len = SCARD_AUTOALLOCATE;
	got_auto(EXPECT(SCardReadCacheW(c, &CARD_ID, 8, L"abuse_item", (PBYTE)&p, &len), OK));
	CHECK(p != NULL && len == 0);
	FREE_AUTO(c, p);

	EXPECT(SCardWriteCacheA(c, NULL, 1, "abuse_item", (PBYTE)data, 1), E_PARAM);
	EXPECT(SCardWriteCacheW(c, &CARD_ID, 1, NULL, (PBYTE)data, 1), E_PARAM);
	EXPECT(SCardWriteCacheA(c, &CARD_ID, 1, "abuse_item", NULL, 1), E_PARAM);
	EXPECT(SCardWriteCacheW(c, &CARD_ID, 1, L"abuse_item", NULL, (DWORD)-1), E_PARAM);
	/* Too big: refused; the item before it stays. */
	BYTE *huge = calloc(1, MAX_CACHE_ITEM + 1);
	EXPECT(SCardWriteCacheA(c, &CARD_ID, 9, "abuse_item", huge, MAX_CACHE_ITEM + 1), SCARD_W_CACHE_ITEM_TOO_BIG);
	EXPECT(SCardWriteCacheA(c, &CARD_ID, 9, "abuse_big", huge, MAX_CACHE_ITEM), OK);
	free(huge);
	len = 0;
	EXPECT(SCardReadCacheA(c, &CARD_ID, 8, "abuse_item", NULL, &len), OK);
	len = 0;
	EXPECT(SCardReadCacheW(c, &CARD_ID, 9, L"abuse_big", NULL, &len), OK);
	CHECK(len == MAX_CACHE_ITEM);
	EXPECT(SCardWriteCacheW(c, &CARD_ID, 9, L"abuse_big", NULL, 0), OK);
	EXPECT(SCardReleaseContext(c), OK);
}

/* SCardGetDeviceTypeId, SCardAudit and the exports the shim does not implement. */
static void others(int with_card)
{
	SCARDCONTEXT c = establish();
	DWORD type = 77, len;
	char buf[64];
	WCHAR wbuf[64];
	BYTE icon[64];
	GUID g;

	if (with_card) {
		EXPECT(SCardGetDeviceTypeIdA(c, READER_A, &type), OK);
		CHECK(type == SCARD_READER_TYPE_USB);
		type = 77;
		EXPECT(SCardGetDeviceTypeIdW(c, L"VIRTUAL PIV READER 0", &type), OK);
		CHECK(type == SCARD_READER_TYPE_USB);
	}
	EXPECT(SCardGetDeviceTypeIdA(c, "No such reader", &type), SCARD_E_UNKNOWN_READER);
	EXPECT(SCardGetDeviceTypeIdW(c, PNP_W, &type), SCARD_E_UNKNOWN_READER);
	EXPECT(SCardGetDeviceTypeIdA(c, NULL, &type), E_PARAM);
	EXPECT(SCardGetDeviceTypeIdW(c, READER_W, NULL), E_PARAM);
	EXPECT(SCardAudit(c, 0), OK);
	EXPECT(SCardAudit(c, (DWORD)-1), OK);

	/* Not implemented: UNSUPPORTED_FEATURE, whatever the arguments. */
	len = sizeof buf;
	EXPECT(SCardGetTransmitCount(1, &type), E_UNSUP);
	EXPECT(SCardGetTransmitCount(0, NULL), E_UNSUP);
	EXPECT(SCardListInterfacesA(c, CARD_A, &g, &len), E_UNSUP);
	EXPECT(SCardListInterfacesW(c, NULL, NULL, NULL), E_UNSUP);
	EXPECT(SCardGetProviderIdA(c, CARD_A, &g), E_UNSUP);
	EXPECT(SCardGetProviderIdW(c, CARD_W, NULL), E_UNSUP);
	EXPECT(SCardIntroduceReaderGroupA(c, "g"), E_UNSUP);
	EXPECT(SCardIntroduceReaderGroupW(c, NULL), E_UNSUP);
	EXPECT(SCardForgetReaderGroupA(c, "g"), E_UNSUP);
	EXPECT(SCardForgetReaderGroupW(0, L"g"), E_UNSUP);
	EXPECT(SCardIntroduceReaderA(c, "r", "d"), E_UNSUP);
	EXPECT(SCardIntroduceReaderW(c, L"r", NULL), E_UNSUP);
	EXPECT(SCardForgetReaderA(c, READER_A), E_UNSUP);
	EXPECT(SCardForgetReaderW(c, READER_W), E_UNSUP);
	EXPECT(SCardAddReaderToGroupA(c, READER_A, "g"), E_UNSUP);
	EXPECT(SCardAddReaderToGroupW(c, READER_W, L"g"), E_UNSUP);
	EXPECT(SCardRemoveReaderFromGroupA(c, READER_A, "g"), E_UNSUP);
	EXPECT(SCardRemoveReaderFromGroupW(c, NULL, NULL), E_UNSUP);
	EXPECT(SCardIntroduceCardTypeA(c, "card", &g, NULL, 0, icon, icon, 4), E_UNSUP);
	EXPECT(SCardIntroduceCardTypeW(c, NULL, NULL, NULL, (DWORD)-1, NULL, NULL, (DWORD)-1), E_UNSUP);
	EXPECT(SCardSetCardTypeProviderNameA(c, CARD_A, SCARD_PROVIDER_CSP, "x"), E_UNSUP);
	EXPECT(SCardSetCardTypeProviderNameW(c, CARD_W, SCARD_PROVIDER_KSP, L"x"), E_UNSUP);
	EXPECT(SCardForgetCardTypeA(c, CARD_A), E_UNSUP);
	EXPECT(SCardForgetCardTypeW(c, CARD_W), E_UNSUP);
	SCARD_READERSTATEA rs = {.szReader = READER_A};
	SCARD_READERSTATEW rsw = {.szReader = READER_W};
	SCARD_ATRMASK mask = {0};
	EXPECT(SCardLocateCardsA(c, CARD_A "\0", &rs, 1), E_UNSUP);
	EXPECT(SCardLocateCardsW(c, NULL, &rsw, (DWORD)-1), E_UNSUP);
	EXPECT(SCardLocateCardsByATRA(c, &mask, 1, &rs, 1), E_UNSUP);
	EXPECT(SCardLocateCardsByATRW(c, NULL, 0, NULL, 0), E_UNSUP);
	len = sizeof icon;
	EXPECT(SCardGetReaderIconA(c, READER_A, icon, &len), E_UNSUP);
	EXPECT(SCardGetReaderIconW(c, READER_W, NULL, NULL), E_UNSUP);
	len = sizeof buf;
	EXPECT(SCardGetReaderDeviceInstanceIdA(c, READER_A, buf, &len), E_UNSUP);
	len = 64;
	EXPECT(SCardGetReaderDeviceInstanceIdW(c, READER_W, wbuf, &len), E_UNSUP);
	len = sizeof buf;
	EXPECT(SCardListReadersWithDeviceInstanceIdA(c, "USB\\x", buf, &len), E_UNSUP);
	EXPECT(SCardListReadersWithDeviceInstanceIdW(0, NULL, NULL, NULL), E_UNSUP);
	DWORD st, proto, al = sizeof icon;
	EXPECT(SCardState(1, &st, &proto, icon, &al), E_UNSUP);
	EXPECT(SCardReleaseContext(c), OK);
}

/* UTF-16 strings and buffers at odd addresses: x86 Windows takes them, so
 * must the DLL (a debug build of Rust aborts on a misaligned *u16 read). */
static void misaligned(int with_card)
{
	SCARDCONTEXT c = establish();
	static BYTE raw[512];
	WCHAR *odd = (WCHAR *)(raw + 1);
	DWORD len, type, proto;
	SCARDHANDLE h = 0;

	memcpy(odd, READER_W, sizeof READER_W);
	if (with_card) {
		EXPECT(SCardConnectW(c, odd, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), OK);
		EXPECT(SCardGetDeviceTypeIdW(c, odd, &type), OK);
	} else {
		EXPECT(SCardConnectW(c, odd, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
		       SCARD_E_UNKNOWN_READER);
	}
	SCARD_READERSTATEW rs = {.szReader = odd, .dwCurrentState = SCARD_STATE_UNAWARE};
	EXPECT(SCardGetStatusChangeW(c, 0, &rs, 1), OK);
	memcpy(odd, CARD_W, sizeof CARD_W);
	WCHAR out[64];
	len = 64;
	EXPECT(SCardGetCardTypeProviderNameW(c, odd, SCARD_PROVIDER_CARD_MODULE, out, &len), OK);
	memcpy(odd, L"SCard$DefaultReaders\0", sizeof L"SCard$DefaultReaders\0");
	len = 64;
	EXPECT(SCardListReadersW(c, odd, out, &len), with_card ? OK : (LONG)SCARD_E_NO_READERS_AVAILABLE);
	memcpy(odd, L"abuse_item", sizeof L"abuse_item");
	BYTE data[4] = {1, 2, 3, 4};
	EXPECT(SCardWriteCacheW(c, &CARD_ID, 1, odd, data, sizeof data), OK);
	len = sizeof data;
	EXPECT(SCardReadCacheW(c, &CARD_ID, 1, odd, data, &len), OK);

	/* Output at an odd address, and an SCARD_AUTOALLOCATE pointer slot at one. */
	static const WCHAR groups_w[] = L"SCard$DefaultReaders\0";
	len = sizeof groups_w / 2;
	EXPECT(SCardListReaderGroupsW(c, odd, &len), OK);
	CHECK(memcmp(odd, groups_w, sizeof groups_w) == 0);
	memset(raw, 0, sizeof(void *) + 1);
	len = SCARD_AUTOALLOCATE;
	got_auto(EXPECT(SCardListReaderGroupsW(c, (LPWSTR)(raw + 1), &len), OK));
	void *slot = NULL;
	memcpy(&slot, raw + 1, sizeof slot);
	CHECK(slot != NULL && len == sizeof groups_w / 2 && memcmp(slot, groups_w, sizeof groups_w) == 0);
	FREE_AUTO(c, slot);
	if (with_card) {
		len = 64;
		EXPECT(SCardStatusW(h, odd, &len, NULL, NULL, NULL, NULL), OK);
		CHECK(memcmp(odd, READER_W, sizeof READER_W) == 0);
		EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	}
	EXPECT(SCardReleaseContext(c), OK);
}

/* ------------------------------------------------------------------ */
/* Threads                                                             */

#define HAMMER_THREADS 6
#define HAMMER_ROUNDS 15

static void msleep(DWORD ms)
{
	Sleep(ms);
}

static HANDLE spawn(LPTHREAD_START_ROUTINE f, void *arg)
{
	HANDLE t = CreateThread(NULL, 0, f, arg, 0, NULL);
	if (!t) {
		fprintf(stderr, "CreateThread failed: %lu\n", GetLastError());
		exit(3);
	}
	return t;
}

static void join(HANDLE t)
{
	WaitForSingleObject(t, INFINITE);
	CloseHandle(t);
}

/* Each thread: its own context and handle, the whole life cycle, A and W. */
static DWORD WINAPI hammer(void *arg)
{
	int me = (int)(ULONG_PTR)arg;
	char item[32];
	snprintf(item, sizeof item, "abuse_thread_%d", me);
	for (int i = 0; i < HAMMER_ROUNDS; i++) {
		SCARDCONTEXT c = establish();
		void *readers = NULL;
		DWORD len = SCARD_AUTOALLOCATE;
		if (i % 2)
			got_auto(EXPECT(SCardListReadersW(c, NULL, (LPWSTR)&readers, &len), OK));
		else
			got_auto(EXPECT(SCardListReadersA(c, NULL, (LPSTR)&readers, &len), OK));
		FREE_AUTO(c, readers);
		SCARDHANDLE h = connect_shared(c);
		EXPECT(SCardBeginTransaction(h), OK);
		unsigned sw = 0;
		EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, &sw), OK);
		EXPECT(tx(h, GET_CHUID, sizeof GET_CHUID, &sw), OK);
		CHECK(sw == 0x9000);
		EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), OK);
		BYTE *atr = NULL;
		DWORD al = SCARD_AUTOALLOCATE;
		got_auto(EXPECT(SCardStatusW(h, NULL, NULL, NULL, NULL, (LPBYTE)&atr, &al), OK));
		FREE_AUTO(c, atr);
		BYTE *kxc = NULL;
		len = SCARD_AUTOALLOCATE;
		got_auto(EXPECT(SCardReadCacheW(c, &CARD_ID, 0, L"Cached_GeneralFile/mscp/kxc00", (PBYTE)&kxc, &len), OK));
		FREE_AUTO(c, kxc);
		BYTE mine[4] = {(BYTE)me, (BYTE)i}, back[4];
		EXPECT(SCardWriteCacheA(c, &CARD_ID, (DWORD)i, item, mine, sizeof mine), OK);
		len = sizeof back;
		EXPECT(SCardReadCacheA(c, &CARD_ID, (DWORD)i, item, back, &len), OK);
		CHECK(len == 4 && memcmp(mine, back, 4) == 0);
		SCARD_READERSTATEW rs = {.szReader = READER_W, .dwCurrentState = SCARD_STATE_UNAWARE};
		EXPECT(SCardGetStatusChangeW(c, 0, &rs, 1), OK);
		EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
		EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, NULL), E_BADHANDLE);
		if (i % 2)
			connect_shared(c); /* left open: the release closes it */
		EXPECT(SCardReleaseContext(c), OK);
		EXPECT(SCardIsValidContext(c), (LONG)ERROR_INVALID_HANDLE);
	}
	return 0;
}

/* Several threads on one context and one handle, and others on their own,
 * transmitting and reading the cache at once: everything succeeds. */
static SCARDCONTEXT one_ctx;
static SCARDHANDLE one_handle;

static DWORD WINAPI shared_user(void *arg)
{
	int kind = (int)(ULONG_PTR)arg;
	SCARDCONTEXT c = one_ctx;
	SCARDHANDLE h = one_handle;
	if (kind >= 2) { /* separate context and handle */
		c = establish();
		h = connect_shared(c);
	}
	EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, NULL), OK);
	for (int i = 0; i < 25; i++) {
		BYTE r[300], item[2048];
		DWORD rl = sizeof r, len = sizeof item;
		if (kind % 2 == 0) {
			EXPECT(SCardTransmit(h, SCARD_PCI_T1, GET_CHUID, sizeof GET_CHUID, NULL, r, &rl), OK);
			EXPECT(SCardReadCacheA(c, &CARD_ID, 0, "Cached_GeneralFile/mscp/cmapfile", item, &len), OK);
		} else {
			EXPECT(SCardReadCacheW(c, &CARD_ID, 0, L"Cached_GeneralFile/mscp/kxc00", item, &len), OK);
			EXPECT(SCardStatusA(h, NULL, NULL, NULL, NULL, NULL, NULL), OK);
		}
	}
	if (kind >= 2)
		EXPECT(SCardReleaseContext(c), OK);
	return 0;
}

/* Handles shared between threads that connect, disconnect, reset and use
 * them at once: every call answers with success or the code for what the
 * other threads did to it. */
#define SLOTS 4
static SCARDCONTEXT shared_ctx;
static volatile SCARDHANDLE slots[SLOTS];
static volatile LONG stop_racing;

static DWORD WINAPI racer_churn(void *arg)
{
	(void)arg;
	timed = 1;
	for (int i = 0; i < 40; i++) {
		int s = i % SLOTS;
		SCARDHANDLE old = slots[s];
		EXPECT2(SCardDisconnect(old, i % 3 == 0 ? SCARD_RESET_CARD : SCARD_LEAVE_CARD), OK, E_BADHANDLE);
		SCARDHANDLE h = 0;
		DWORD proto;
		EXPECT(SCardConnectW(shared_ctx, READER_W, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), OK);
		InterlockedExchange64((volatile LONG64 *)&slots[s], (LONG64)h);
	}
	InterlockedExchange(&stop_racing, 1);
	return 0;
}

static DWORD WINAPI racer_user(void *arg)
{
	uint32_t seed = (uint32_t)(ULONG_PTR)arg;
	timed = 1;
	while (!InterlockedCompareExchange(&stop_racing, 0, 0)) {
		seed = seed * 1103515245 + 12345;
		SCARDHANDLE h = slots[(seed >> 16) % SLOTS];
		BYTE r[300];
		DWORD rl = sizeof r, proto;
		LONG rv = SCardTransmit(h, SCARD_PCI_T1, GET_CHUID, sizeof GET_CHUID, NULL, r, &rl);
		if (rv == (LONG)SCARD_W_RESET_CARD) {
			EXPECT2(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), OK,
				E_BADHANDLE);
			continue;
		}
		EXPECT2(rv, OK, E_BADHANDLE);
		rv = SCardBeginTransaction(h);
		if (rv == OK) {
			EXPECT_RACE(SCardStatusW(h, NULL, NULL, NULL, NULL, NULL, NULL));
			/* Racers share handles: another one may have ended this
			 * handle's transaction first (NOT_TRANSACTED). */
			rv = SCardEndTransaction(h, SCARD_LEAVE_CARD);
			EXPECT_RACE(rv == (LONG)SCARD_E_NOT_TRANSACTED ? OK : rv);
		} else {
			EXPECT2(rv, E_BADHANDLE, SCARD_W_RESET_CARD);
		}
	}
	return 0;
}

struct waiter {
	SCARDCONTEXT c;
	DWORD timeout;
	int wide, ignored;
	LONG rv;
	volatile LONG done;
};

static DWORD WINAPI wait_change(void *arg)
{
	struct waiter *w = arg;
	LONG rv;
	if (w->ignored) {
		/* Only an ignored entry: nothing can change, only a cancel ends it. */
		SCARD_READERSTATEA rs = {.szReader = READER_A, .dwCurrentState = SCARD_STATE_IGNORE};
		rv = SCardGetStatusChangeA(w->c, w->timeout, &rs, 1);
	} else if (w->wide) {
		SCARD_READERSTATEW rs = {.szReader = READER_W, .dwCurrentState = SCARD_STATE_UNAWARE};
		rv = SCardGetStatusChangeW(w->c, 0, &rs, 1);
		if (rv == OK) {
			rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
			rv = SCardGetStatusChangeW(w->c, w->timeout, &rs, 1);
		}
	} else {
		/* learn the current state, then wait for a change that never comes */
		SCARD_READERSTATEA rs[2] = {{.szReader = READER_A}, {.szReader = PNP_A}};
		rv = SCardGetStatusChangeA(w->c, 0, rs, 2);
		if (rv == OK) {
			for (int i = 0; i < 2; i++)
				rs[i].dwCurrentState = rs[i].dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
			rv = SCardGetStatusChangeA(w->c, w->timeout, rs, 2);
		}
	}
	w->rv = rv;
	InterlockedExchange(&w->done, 1);
	return 0;
}

static void cancel_until_done(SCARDCONTEXT c, struct waiter *w, int n)
{
	timed = 1;
	for (;;) {
		int all = 1;
		for (int i = 0; i < n; i++)
			all &= InterlockedCompareExchange(&w[i].done, 0, 0) != 0;
		if (all)
			break;
		msleep(50);
		EXPECT(SCardCancel(c), OK);
	}
	timed = 0;
}

struct tx_arg {
	SCARDHANDLE h;
	volatile LONG rv;
};

static DWORD WINAPI tx_thread(void *arg)
{
	struct tx_arg *a = arg;
	InterlockedExchange(&a->rv, tx(a->h, GET_CHUID, sizeof GET_CHUID, NULL));
	return 0;
}

static DWORD WINAPI begin_thread(void *arg)
{
	struct tx_arg *a = arg;
	LONG rv = SCardBeginTransaction(a->h);
	if (rv == OK)
		EXPECT(SCardEndTransaction(a->h, SCARD_LEAVE_CARD), OK);
	InterlockedExchange(&a->rv, rv);
	return 0;
}

static void threads(void)
{
	HANDLE t[HAMMER_THREADS + 4];

	section = "threads: hammer";
	fprintf(stderr, "  hammer: %d threads x %d life cycles\n", HAMMER_THREADS, HAMMER_ROUNDS);
	for (int i = 0; i < HAMMER_THREADS; i++)
		t[i] = spawn(hammer, (void *)(ULONG_PTR)i);
	for (int i = 0; i < HAMMER_THREADS; i++)
		join(t[i]);

	section = "threads: one context";
	fprintf(stderr, "  transmit + cache reads on one context / handle and on separate ones\n");
	one_ctx = establish();
	one_handle = connect_shared(one_ctx);
	for (int i = 0; i < 6; i++)
		t[i] = spawn(shared_user, (void *)(ULONG_PTR)i);
	for (int i = 0; i < 6; i++)
		join(t[i]);
	EXPECT(SCardReleaseContext(one_ctx), OK);

	section = "threads: racing handles";
	fprintf(stderr, "  racing handles\n");
	shared_ctx = establish();
	for (int i = 0; i < SLOTS; i++)
		slots[i] = connect_shared(shared_ctx);
	t[0] = spawn(racer_churn, NULL);
	for (int i = 1; i <= 3; i++)
		t[i] = spawn(racer_user, (void *)(ULONG_PTR)i);
	for (int i = 0; i <= 3; i++)
		join(t[i]);
	/* The context goes while users are still at it. */
	InterlockedExchange(&stop_racing, 0);
	for (int i = 1; i <= 3; i++)
		t[i] = spawn(racer_user, (void *)(ULONG_PTR)(i + 10));
	msleep(100);
	EXPECT(SCardReleaseContext(shared_ctx), OK);
	msleep(50);
	InterlockedExchange(&stop_racing, 1);
	for (int i = 1; i <= 3; i++)
		join(t[i]);
	for (int i = 0; i < SLOTS; i++)
		EXPECT(SCardStatusA(slots[i], NULL, NULL, NULL, NULL, NULL, NULL), E_BADHANDLE);

	section = "threads: status change + cancel";
	fprintf(stderr, "  GetStatusChangeA/W + SCardCancel\n");
	SCARDCONTEXT c = establish(), other = establish();
	struct waiter w[5] = {
		{c, INFINITE, 0, 0, -1, 0}, {c, 60000, 1, 0, -1, 0}, {c, INFINITE, 0, 1, -1, 0},
		{other, 400, 1, 0, -1, 0},  {other, 300, 0, 1, -1, 0},
	};
	for (int i = 0; i < 5; i++)
		t[i] = spawn(wait_change, &w[i]);
	cancel_until_done(c, w, 3);
	for (int i = 0; i < 5; i++)
		join(t[i]);
	EXPECT(w[0].rv, SCARD_E_CANCELLED);
	EXPECT(w[1].rv, SCARD_E_CANCELLED);
	EXPECT(w[2].rv, SCARD_E_CANCELLED);
	EXPECT(w[3].rv, SCARD_E_TIMEOUT); /* another context's cancel is not ours */
	EXPECT(w[4].rv, SCARD_E_TIMEOUT);
	/* A cancel with no one waiting does not cancel the next wait. */
	EXPECT(SCardCancel(c), OK);
	struct waiter late = {c, 50, 1, 0, -1, 0};
	wait_change(&late);
	EXPECT(late.rv, SCARD_E_TIMEOUT);
	/* Releasing the context ends a wait on it. */
	struct waiter r = {other, INFINITE, 1, 0, -1, 0};
	t[0] = spawn(wait_change, &r);
	msleep(300);
	EXPECT(SCardReleaseContext(other), OK);
	join(t[0]);
	EXPECT2(r.rv, E_BADHANDLE, SCARD_E_CANCELLED);

	section = "threads: transactions";
	fprintf(stderr, "  transactions across threads\n");
	SCARDHANDLE h1 = connect_shared(c), h2 = connect_shared(c);
	struct tx_arg a = {h2, -1};
	EXPECT(SCardBeginTransaction(h1), OK);
	t[0] = spawn(tx_thread, &a);
	msleep(200);
	CHECK(a.rv == -1); /* still waiting for h1's transaction */
	EXPECT(SCardEndTransaction(h1, SCARD_LEAVE_CARD), OK);
	join(t[0]);
	EXPECT(a.rv, OK);
	/* The holder disconnects: the waiter gets its turn. */
	a.rv = -1;
	EXPECT(SCardBeginTransaction(h1), OK);
	t[0] = spawn(begin_thread, &a);
	msleep(200);
	CHECK(a.rv == -1);
	EXPECT(SCardDisconnect(h1, SCARD_LEAVE_CARD), OK);
	join(t[0]);
	EXPECT(a.rv, OK);
	/* The waiter's own handle is closed under it. */
	SCARDCONTEXT c2 = establish();
	SCARDHANDLE h3 = connect_shared(c2);
	a.h = h3;
	a.rv = -1;
	EXPECT(SCardBeginTransaction(h2), OK);
	t[0] = spawn(tx_thread, &a);
	msleep(200);
	EXPECT(SCardReleaseContext(c2), OK); /* closes h3 */
	EXPECT(SCardEndTransaction(h2, SCARD_LEAVE_CARD), OK);
	join(t[0]);
	EXPECT2(a.rv, E_BADHANDLE, OK);
	EXPECT(SCardReleaseContext(c), OK);
	section = "";
}

/* ------------------------------------------------------------------ */

static void no_readers(int fast)
{
	SCARDCONTEXT c = establish();
	DWORD proto;
	SCARDHANDLE h;
	EXPECT(SCardConnectA(c, READER_A, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), SCARD_E_UNKNOWN_READER);
	EXPECT(SCardConnectW(c, READER_W, SCARD_SHARE_DIRECT, 0, &h, &proto), SCARD_E_UNKNOWN_READER);
	DWORD type;
	EXPECT(SCardGetDeviceTypeIdA(c, READER_A, &type), SCARD_E_UNKNOWN_READER);
	SCARD_READERSTATEW rs = {.szReader = PNP_W};
	EXPECT(SCardGetStatusChangeW(c, fast ? 0 : 20, &rs, 1), SCARD_E_TIMEOUT);
	bad_handle_calls(0x01000022, E_BADHANDLE);
	EXPECT(SCardReleaseContext(c), OK);
}

static void no_service(void)
{
	const LONG NS = (LONG)SCARD_E_NO_SERVICE;
	SCARDCONTEXT c = 0;
	EXPECT(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), NS);
	CHECK(c == 0);
	/* Parameter checks that come before the resource manager. */
	EXPECT(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, NULL), E_PARAM);
	bad_context_calls(0x01000011, NS);
	bad_handle_calls(0x01000022, NS);
	DWORD len = 64;
	char buf[64];
	EXPECT(SCardListReadersA(0, NULL, buf, &len), NS);
	EXPECT(SCardListCardsW(0, NULL, NULL, 0, NULL, &len), NS);
	EXPECT(SCardGetCardTypeProviderNameA(0, NULL, SCARD_PROVIDER_CSP, buf, &len), E_PARAM);
	EXPECT(SCardReadCacheA(0x01000011, NULL, 0, "x", (PBYTE)buf, &len), E_PARAM);
	EXPECT(SCardTransmit(0x01000022, SCARD_PCI_T1, NULL, 4, NULL, (PBYTE)buf, &len), E_PARAM);
	EXPECT(SCardFreeMemory(0, NULL), E_PARAM);
	EXPECT(SCardFreeMemory(0, &c), E_PARAM);
	EXPECT(SCardSetAttrib(0x01000022, SCARD_ATTR_VENDOR_NAME, (LPCBYTE)buf, 4), E_UNSUP);
	EXPECT(SCardGetTransmitCount(0x01000022, &len), E_UNSUP);
	EXPECT(SCardState(0x01000022, NULL, NULL, NULL, NULL), E_UNSUP);
}

/* ------------------------------------------------------------------ */
/* Leak check                                                          */

struct mem {
	unsigned long long heap_bytes, heap_blocks, private_usage, pagefile;
	DWORD handles;
};

static void measure(struct mem *m)
{
	HANDLE heaps[256];
	DWORD n = GetProcessHeaps(256, heaps);
	memset(m, 0, sizeof *m);
	for (DWORD i = 0; i < n && i < 256; i++) {
		PROCESS_HEAP_ENTRY e;
		if (!HeapLock(heaps[i]))
			continue;
		e.lpData = NULL;
		while (HeapWalk(heaps[i], &e)) {
			if (e.wFlags & PROCESS_HEAP_ENTRY_BUSY) {
				m->heap_bytes += e.cbData;
				m->heap_blocks++;
			}
		}
		HeapUnlock(heaps[i]);
	}
	PROCESS_MEMORY_COUNTERS_EX pmc;
	memset(&pmc, 0, sizeof pmc);
	if (GetProcessMemoryInfo(GetCurrentProcess(), (PROCESS_MEMORY_COUNTERS *)&pmc, sizeof pmc)) {
		m->private_usage = pmc.PrivateUsage;
		m->pagefile = pmc.PagefileUsage;
	}
	/* Wine answers 0 (not implemented); Windows gives the real count. */
	if (!GetProcessHandleCount(GetCurrentProcess(), &m->handles))
		m->handles = 0;
}

static double seconds(void)
{
	LARGE_INTEGER f, t;
	QueryPerformanceFrequency(&f);
	QueryPerformanceCounter(&t);
	return (double)t.QuadPart / (double)f.QuadPart;
}

/* The whole single-threaded sequence of a mode. */
static void sequence(const char *mode, int fast)
{
	if (strcmp(mode, "noservice") == 0) {
		no_service();
		pcis_and_started_event();
		return;
	}
	int with_card = strcmp(mode, "card") == 0;
	contexts(with_card);
	listing(with_card);
	status_change(with_card, fast);
	cache(with_card);
	others(with_card);
	misaligned(with_card);
	if (with_card) {
		connect_rules();
		transactions();
		status_rules();
		transmit_rules();
		attributes();
	} else {
		no_readers(fast);
	}
}

/*
 * Bounds for the growth over the measured iterations, after the warm-up
 * (see RELIABILITY.md for the measured numbers: 0 blocks and 0 bytes in
 * every mode). A leak of one heap block per iteration adds `iterations`
 * blocks, far past LEAK_BLOCKS (the `selftest` argument proves it); the
 * byte bound leaves room for one late growth of a hash table; the commit
 * charge is counted in pages and moves with the C runtime's own heap.
 */
#define WARMUP 20
#define LEAK_BLOCKS 64
#define LEAK_HEAP_BYTES (64 * 1024)
#define LEAK_COMMIT_BYTES (4 * 1024 * 1024)

/* `selftest`: leak one SCARD_AUTOALLOCATE buffer per iteration on purpose;
 * the leak check must then fail. */
static int leak_on_purpose;

static void leak_check(const char *mode, int iterations)
{
	struct mem m0, m1, m2;
	LONG checks0 = checks;
	double t0 = seconds();
	section = "leak check";
	fprintf(stderr, " leak check: %d warm-up + %d iterations of the sequence%s\n", WARMUP, iterations,
		leak_on_purpose ? ", leaking one buffer per iteration on purpose" : "");
	for (int i = 0; i < WARMUP; i++)
		sequence(mode, 1);
	measure(&m0);
	for (int i = 0; i < iterations; i++) {
		if (i == iterations / 2)
			measure(&m1);
		sequence(mode, 1);
		if (leak_on_purpose) {
			char *p = NULL;
			DWORD len = SCARD_AUTOALLOCATE;
			SCardListCardsA(0, NULL, NULL, 0, (LPSTR)&p, &len);
		}
	}
	measure(&m2);
	double secs = seconds() - t0;
	/* PrivateUsage where the system has it (Windows), else PagefileUsage
	 * (Wine: 0 and anonymous resident memory). */
	int have_private = m0.private_usage != 0;
	unsigned long long c0 = have_private ? m0.private_usage : m0.pagefile;
	unsigned long long c1 = have_private ? m1.private_usage : m1.pagefile;
	unsigned long long c2 = have_private ? m2.private_usage : m2.pagefile;
	long long dblocks = (long long)(m2.heap_blocks - m0.heap_blocks);
	long long dbytes = (long long)(m2.heap_bytes - m0.heap_bytes);
	long long dcommit = (long long)(c2 - c0);
	fprintf(stderr,
		"ffi abuse leak check: mode %s: %d iterations measured after %d warm-up (%ld checks in all) in %.2f s\n"
		"  heap live blocks %llu -> %llu -> %llu (%+lld, bound %d)\n"
		"  heap live bytes  %llu -> %llu -> %llu (%+lld, bound %d)\n"
		"  %s %llu -> %llu -> %llu (%+lld, bound %d)\n"
		"  handles          %lu -> %lu -> %lu%s\n"
		"  SCARD_AUTOALLOCATE buffers not freed: %ld\n",
		mode, iterations, WARMUP, (long)(checks - checks0), secs, m0.heap_blocks, m1.heap_blocks,
		m2.heap_blocks, dblocks, LEAK_BLOCKS, m0.heap_bytes, m1.heap_bytes, m2.heap_bytes, dbytes,
		LEAK_HEAP_BYTES, have_private ? "PrivateUsage    " : "PagefileUsage   ", c0, c1, c2, dcommit,
		LEAK_COMMIT_BYTES, (unsigned long)m0.handles, (unsigned long)m1.handles, (unsigned long)m2.handles,
		m0.handles ? "" : " (not available)", (long)outstanding);
	CHECK(m0.heap_blocks > 0 && m0.heap_bytes > 0); /* HeapWalk works here */
	CHECK(dblocks <= LEAK_BLOCKS);
	CHECK(dbytes <= LEAK_HEAP_BYTES);
	CHECK(dcommit <= LEAK_COMMIT_BYTES);
	CHECK(m0.handles == 0 || m2.handles <= m0.handles);
	CHECK(outstanding == 0);
	section = "";
}

static LONG WINAPI crashed(EXCEPTION_POINTERS *e)
{
	fprintf(stderr, "CRASH: exception 0x%08lX at %p; last call: abuse_win.c:%d %s [%s]\n",
		(unsigned long)e->ExceptionRecord->ExceptionCode, e->ExceptionRecord->ExceptionAddress,
		last_line, last_call, section);
	fflush(stderr);
	return EXCEPTION_EXECUTE_HANDLER;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "card";
	int iterations = argc > 2 ? atoi(argv[2]) : 2000;
	leak_on_purpose = argc > 3 && strcmp(argv[3], "selftest") == 0;

	setvbuf(stderr, NULL, _IONBF, 0);
	SetUnhandledExceptionFilter(crashed);
	guard_init();
	fprintf(stderr, "ffi abuse (Windows ABI): mode %s\n", mode);
	section = "setup";
	our_dll();
	pcis_and_started_event();

	if (strcmp(mode, "noservice") == 0) {
		section = "no service";
		no_service();
	} else if (strcmp(mode, "noreaders") == 0) {
		section = "contexts";
		contexts(0);
		section = "listing";
		listing(0);
		section = "status change";
		status_change(0, 0);
		section = "cache";
		cache(0);
		section = "others";
		others(0);
		section = "misaligned";
		misaligned(0);
		section = "no readers";
		no_readers(0);
	} else if (strcmp(mode, "card") == 0) {
		/* The card's ATR, for the comparisons below. */
		SCARDCONTEXT c = establish();
		SCARDHANDLE h = connect_shared(c);
		card_atr_len = sizeof card_atr;
		EXPECT(SCardStatusA(h, NULL, NULL, NULL, NULL, card_atr, &card_atr_len), OK);
		CHECK(card_atr_len > 1 && card_atr_len <= 36 && card_atr[0] == 0x3B);
		EXPECT(SCardReleaseContext(c), OK);

		fprintf(stderr, " contexts\n");
		section = "contexts";
		contexts(1);
		fprintf(stderr, " listing\n");
		section = "listing";
		listing(1);
		fprintf(stderr, " status change\n");
		section = "status change";
		status_change(1, 0);
		fprintf(stderr, " connect / reconnect / disconnect\n");
		section = "connect";
		connect_rules();
		fprintf(stderr, " transactions\n");
		section = "transactions";
		transactions();
		fprintf(stderr, " status\n");
		section = "status";
		status_rules();
		fprintf(stderr, " transmit / control\n");
		section = "transmit";
		transmit_rules();
		fprintf(stderr, " attributes\n");
		section = "attributes";
		attributes();
		fprintf(stderr, " cache\n");
		section = "cache";
		cache(1);
		fprintf(stderr, " device type, audit, unimplemented exports\n");
		section = "others";
		others(1);
		fprintf(stderr, " misaligned UTF-16\n");
		section = "misaligned";
		misaligned(1);
		fprintf(stderr, " threads\n");
		threads();
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	section = "";
	CHECK(outstanding == 0);
	LONG main_checks = checks;
	if (iterations > 0)
		leak_check(mode, iterations);
	fprintf(stderr,
		"ffi abuse (Windows ABI): mode %s: %ld checks (+%ld timing-dependent, +%ld in the leak check), "
		"%ld failed\n",
		mode, (long)main_checks, (long)timed_checks, (long)(checks - main_checks), (long)failures);
	return failures ? 1 : 0;
}
