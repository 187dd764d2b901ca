/*
 * FFI abuse driver for the pcsc-lite build of winscard-shim.
 *
 * Drives every export of libwinscard.so through the C ABI with NULL
 * pointers, zero lengths, tiny buffers, SCARD_AUTOALLOCATE, stale and
 * foreign handles and concurrent threads, and checks the SCARD_* code of
 * every call. Built and run under valgrind by tests/ffi_abuse.rs; the
 * types and constants come from pcsc-lite's <PCSC/winscard.h>.
 *
 * Usage: abuse card       (VIRTUAL_PIV_CARD_FILE names one card: reader 00 00)
 *        abuse noreaders  (nothing configured: zero readers)
 *        abuse noservice  (a configuration that cannot be opened)
 *
 * Exit status 0 when every check passed; each failure is printed with its
 * line, the call and the code it got and wanted.
 */
#include <PCSC/winscard.h>
#include <PCSC/reader.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READER "Virtual PIV Reader 00 00"
#define PNP "\\\\?PnP?\\Notification"
/* The largest command the shim accepts (extended APDU, 64 KiB of data). */
#define MAX_APDU (4 + 3 + 65536 + 3)

static int checks, failures;

static const char *name_of(LONG rv)
{
	return pcsc_stringify_error(rv);
}

static void fail_line(int line, const char *what, const char *detail)
{
	__atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
	fprintf(stderr, "FAIL abuse.c:%d: %s: %s\n", line, what, detail);
}

static LONG expect(int line, const char *what, LONG got, LONG want)
{
	__atomic_add_fetch(&checks, 1, __ATOMIC_SEQ_CST);
	if (got != want) {
		char d[256];
		snprintf(d, sizeof d, "got 0x%08lX (%s), want 0x%08lX (%s)",
			 (unsigned long)got, name_of(got), (unsigned long)want, name_of(want));
		fail_line(line, what, d);
	}
	return got;
}

static LONG expect2(int line, const char *what, LONG got, LONG a, LONG b)
{
	__atomic_add_fetch(&checks, 1, __ATOMIC_SEQ_CST);
	if (got != a && got != b) {
		char d[256];
		snprintf(d, sizeof d, "got 0x%08lX (%s), want 0x%08lX or 0x%08lX",
			 (unsigned long)got, name_of(got), (unsigned long)a, (unsigned long)b);
		fail_line(line, what, d);
	}
	return got;
}

static void truth(int line, const char *what, int ok)
{
	__atomic_add_fetch(&checks, 1, __ATOMIC_SEQ_CST);
	if (!ok)
		fail_line(line, what, "is false");
}

/* EXPECT(call, code): the call returns exactly that code. */
#define EXPECT(call, want) expect(__LINE__, #call, (call), (want))
#define EXPECT2(call, a, b) expect2(__LINE__, #call, (call), (a), (b))
/* Success, a closed handle or a reset by another thread. */
#define EXPECT_RACE(call)                                                        \
	do {                                                                     \
		LONG rv_ = (call);                                               \
		expect2(__LINE__, #call, rv_ == SCARD_W_RESET_CARD ? OK : rv_, OK, \
			SCARD_E_INVALID_HANDLE);                                 \
	} while (0)
#define CHECK(cond) truth(__LINE__, #cond, !!(cond))

#define OK SCARD_S_SUCCESS
#define E_HANDLE SCARD_E_INVALID_HANDLE
#define E_PARAM SCARD_E_INVALID_PARAMETER
#define E_VALUE SCARD_E_INVALID_VALUE
#define E_BUF SCARD_E_INSUFFICIENT_BUFFER

static const unsigned char SELECT_PIV[] = {0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0, 0x00, 0x00,
					    0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x00};
static const unsigned char GET_CHUID[] = {0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C,
					  0x03, 0x5F, 0xC1, 0x02, 0x00};

/* Handle values no one ever handed out. */
static const LONG FOREIGN[] = {0, 1, -1, 0x11, 0x7FFFFFFF, (LONG)0x80000000, 0x0100000F,
			       (LONG)INT64_MIN, INT64_MAX, 0x123456789ABCLL};
#define NFOREIGN (sizeof FOREIGN / sizeof FOREIGN[0])

static void msleep(int ms)
{
	usleep((useconds_t)ms * 1000);
}

static SCARDCONTEXT establish(void)
{
	SCARDCONTEXT c = 0;
	EXPECT(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), OK);
	return c;
}

static SCARDHANDLE connect_shared(SCARDCONTEXT c)
{
	SCARDHANDLE h = 0;
	DWORD proto = 0;
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
			    &h, &proto), OK);
	CHECK(proto == SCARD_PROTOCOL_T1);
	return h;
}

/* One command with a generous buffer; returns the code, *sw the status word. */
static LONG tx(SCARDHANDLE h, const unsigned char *apdu, DWORD n, unsigned *sw)
{
	unsigned char r[512];
	DWORD rl = sizeof r;
	LONG rv = SCardTransmit(h, SCARD_PCI_T1, apdu, n, NULL, r, &rl);
	if (sw)
		*sw = rv == OK && rl >= 2 ? (unsigned)(r[rl - 2] << 8 | r[rl - 1]) : 0;
	return rv;
}

/* ------------------------------------------------------------------ */

static void stringify_and_pcis(void)
{
	CHECK(strcmp(pcsc_stringify_error(OK), "Command successful.") == 0);
	for (LONG c = (LONG)0x80100001; c <= (LONG)0x80100072; c++) {
		const char *s = pcsc_stringify_error(c);
		CHECK(s != NULL && strlen(s) > 0 && strlen(s) < 200);
	}
	const LONG odd[] = {1, -1, (LONG)INT64_MIN, INT64_MAX, 0x80100000, 0x80100073, 0x12345};
	for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
		const char *s = pcsc_stringify_error(odd[i]);
		CHECK(s != NULL && strlen(s) > 0);
	}
	CHECK(strcmp(pcsc_stringify_error(E_HANDLE), "Invalid handle.") == 0);
	CHECK(strcmp(pcsc_stringify_error(SCARD_E_UNSUPPORTED_FEATURE), "Feature not supported.") == 0);
	CHECK(g_rgSCardT0Pci.dwProtocol == SCARD_PROTOCOL_T0);
	CHECK(g_rgSCardT1Pci.dwProtocol == SCARD_PROTOCOL_T1);
	CHECK(g_rgSCardRawPci.dwProtocol == SCARD_PROTOCOL_RAW);
	CHECK(g_rgSCardT0Pci.cbPciLength == sizeof(SCARD_IO_REQUEST));
	CHECK(g_rgSCardT1Pci.cbPciLength == sizeof(SCARD_IO_REQUEST));
	CHECK(g_rgSCardRawPci.cbPciLength == sizeof(SCARD_IO_REQUEST));
}

/* Every call that takes a context, with a context that is not one. */
static void bad_context_calls(SCARDCONTEXT c, LONG want)
{
	char buf[128];
	DWORD len = sizeof buf;
	SCARDHANDLE h = 0;
	DWORD proto = 0;
	SCARD_READERSTATE rs = {.szReader = READER, .dwCurrentState = SCARD_STATE_UNAWARE};

	EXPECT(SCardIsValidContext(c), want);
	EXPECT(SCardCancel(c), want);
	EXPECT(SCardListReaders(c, NULL, buf, &len), want);
	len = sizeof buf;
	EXPECT(SCardListReaderGroups(c, buf, &len), want);
	EXPECT(SCardGetStatusChange(c, 0, &rs, 1), want);
	EXPECT(SCardGetStatusChange(c, 0, NULL, 0), want);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), want);
	EXPECT(SCardReleaseContext(c), want);
}

/* Every call that takes a card handle, with a handle that is not one. */
static void bad_handle_calls(SCARDHANDLE h, LONG want)
{
	unsigned char r[64];
	DWORD rl = sizeof r, proto = 0, state = 0, n = 0;
	char name[64];
	DWORD nl = sizeof name;
	unsigned char atr[MAX_ATR_SIZE];
	DWORD al = sizeof atr;
	unsigned char attr[4] = {0};

	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), want);
	EXPECT(SCardBeginTransaction(h), want);
	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), want);
	EXPECT(SCardStatus(h, name, &nl, &state, &proto, atr, &al), want);
	EXPECT(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), want);
	EXPECT(SCardTransmit(h, SCARD_PCI_T1, SELECT_PIV, sizeof SELECT_PIV, NULL, r, &rl), want);
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, &n), want);
	rl = sizeof r;
	EXPECT(SCardGetAttrib(h, SCARD_ATTR_VENDOR_NAME, r, &rl), want);
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, attr, sizeof attr), want);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), want);
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
		EXPECT(SCardReleaseContext(c), OK);
		/* stale */
		bad_context_calls(c, E_HANDLE);
	}
	for (size_t i = 0; i < NFOREIGN; i++)
		bad_context_calls(FOREIGN[i], E_HANDLE);
	srand(7);
	for (int i = 0; i < 200; i++) {
		LONG r = (LONG)(((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 2) ^ (uint64_t)rand());
		EXPECT(SCardIsValidContext(r), E_HANDLE);
		EXPECT(SCardReleaseContext(r), E_HANDLE);
	}

	if (!with_card)
		return;
	/* A card handle is not a context, and a context is not a card handle. */
	c = establish();
	SCARDHANDLE h = connect_shared(c);
	EXPECT(SCardIsValidContext(h), E_HANDLE);
	EXPECT(SCardReleaseContext(h), E_HANDLE);
	bad_handle_calls(c, E_HANDLE);
	EXPECT(SCardIsValidContext(c), OK);
	/* Releasing a context closes its card handles. */
	SCARDHANDLE h2 = connect_shared(c);
	EXPECT(SCardReleaseContext(c), OK);
	bad_handle_calls(h, E_HANDLE);
	bad_handle_calls(h2, E_HANDLE);
}

/* SCardListReaders and SCardListReaderGroups share the buffer rules. */
typedef LONG (*list_fn)(SCARDCONTEXT, LPSTR, LPDWORD);

static LONG list_readers(SCARDCONTEXT c, LPSTR b, LPDWORD l)
{
	return SCardListReaders(c, NULL, b, l);
}

static void buffer_rules(const char *what, list_fn f, SCARDCONTEXT c, const char *want, DWORD want_len)
{
	DWORD len = 0;
	char *p = NULL;

	fprintf(stderr, "  %s\n", what);
	EXPECT(f(c, NULL, NULL), E_PARAM);
	char stackbuf[64];
	EXPECT(f(c, stackbuf, NULL), E_PARAM);
	len = 12345;
	EXPECT(f(c, NULL, &len), OK); /* NULL buffer: the needed length */
	CHECK(len == want_len);
	len = 0;
	EXPECT(f(c, NULL, &len), OK);
	CHECK(len == want_len);
	for (DWORD n = 0; n < want_len; n++) {
		/* exactly n bytes on the heap: valgrind sees any overrun */
		char *b = malloc(n ? n : 1);
		len = n;
		EXPECT(f(c, b, &len), E_BUF);
		CHECK(len == want_len);
		free(b);
	}
	char *b = malloc(want_len);
	len = want_len;
	EXPECT(f(c, b, &len), OK);
	CHECK(len == want_len && memcmp(b, want, want_len) == 0);
	free(b);
	len = 4096;
	char big[4096];
	EXPECT(f(c, big, &len), OK);
	CHECK(len == want_len && memcmp(big, want, want_len) == 0);

	len = SCARD_AUTOALLOCATE;
	EXPECT(f(c, NULL, &len), E_PARAM);
	len = SCARD_AUTOALLOCATE;
	EXPECT(f(c, (LPSTR)&p, &len), OK);
	CHECK(p != NULL && len == want_len && memcmp(p, want, want_len) == 0);
	EXPECT(SCardFreeMemory(c, p), OK);
	EXPECT(SCardFreeMemory(c, p), E_PARAM); /* double free: refused, not freed twice */
}

static void listing(void)
{
	SCARDCONTEXT c = establish();
	const char readers[] = READER "\0";
	const char groups[] = "SCard$DefaultReaders\0";
	DWORD len;
	char buf[256];

	buffer_rules("SCardListReaders", list_readers, c, readers, sizeof readers);
	buffer_rules("SCardListReaderGroups", SCardListReaderGroups, c, groups, sizeof groups);

	len = sizeof buf;
	EXPECT(SCardListReaders(c, "SCard$DefaultReaders\0", buf, &len), OK);
	len = sizeof buf;
	EXPECT(SCardListReaders(c, "SCard$AllReaders\0Other\0", buf, &len), OK);
	len = sizeof buf;
	EXPECT(SCardListReaders(c, "No such group\0", buf, &len), SCARD_E_NO_READERS_AVAILABLE);

	/* SCardFreeMemory: NULL is a no-op (as free(NULL)); pointers that are
	 * not ours are refused rather than handed to free(). */
	EXPECT(SCardFreeMemory(c, NULL), OK);
	EXPECT(SCardFreeMemory(c, buf), E_PARAM);
	void *heap = malloc(16);
	EXPECT(SCardFreeMemory(c, heap), E_PARAM);
	free(heap);
	EXPECT(SCardFreeMemory(c, (void *)1), E_PARAM);
	/* Memory handed out stays releasable after its context is gone. */
	char *p = NULL;
	len = SCARD_AUTOALLOCATE;
	EXPECT(SCardListReaders(c, NULL, (LPSTR)&p, &len), OK);
	EXPECT(SCardReleaseContext(c), OK);
	EXPECT(SCardFreeMemory(c, p), OK);
}

static void status_change(void)
{
	SCARDCONTEXT c = establish();
	SCARD_READERSTATE rs[3];
	memset(rs, 0, sizeof rs);

	EXPECT(SCardGetStatusChange(c, 0, NULL, 0), OK);
	EXPECT(SCardGetStatusChange(c, INFINITE, NULL, 0), OK);
	EXPECT(SCardGetStatusChange(c, 0, NULL, 1), E_PARAM);
	EXPECT(SCardGetStatusChange(c, 0, rs, 1), E_VALUE); /* szReader NULL */
	rs[0].szReader = READER;
	EXPECT(SCardGetStatusChange(c, 0, rs, 2), E_VALUE); /* the second one's */
	/* A count no array can have. */
	EXPECT(SCardGetStatusChange(c, 0, rs, (DWORD)-1), E_PARAM);
	EXPECT(SCardGetStatusChange(c, 0, rs, (DWORD)1 << 62), E_PARAM);

	rs[0].dwCurrentState = SCARD_STATE_UNAWARE;
	rs[0].cbAtr = 999;
	memset(rs[0].rgbAtr, 0xEE, MAX_ATR_SIZE);
	EXPECT(SCardGetStatusChange(c, 0, rs, 1), OK);
	CHECK((rs[0].dwEventState & 0xFFFF) == (SCARD_STATE_PRESENT | SCARD_STATE_CHANGED));
	CHECK(rs[0].cbAtr > 0 && rs[0].cbAtr <= MAX_ATR_SIZE && rs[0].rgbAtr[0] == 0x3B);

	/* Fed back: nothing changes, so it times out. */
	rs[0].dwCurrentState = rs[0].dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
	EXPECT(SCardGetStatusChange(c, 0, rs, 1), SCARD_E_TIMEOUT);
	EXPECT(SCardGetStatusChange(c, 30, rs, 1), SCARD_E_TIMEOUT);
	CHECK((rs[0].dwEventState & SCARD_STATE_CHANGED) == 0);

	/* Unknown readers, the PnP pseudo-reader, ignored entries. */
	rs[1] = (SCARD_READERSTATE){.szReader = "No such reader", .dwCurrentState = 0};
	rs[2] = (SCARD_READERSTATE){.szReader = PNP, .dwCurrentState = 0};
	EXPECT(SCardGetStatusChange(c, 0, rs, 3), OK);
	CHECK(rs[1].dwEventState == (SCARD_STATE_UNKNOWN | SCARD_STATE_CHANGED));
	CHECK((rs[2].dwEventState >> 16) == 1 && (rs[2].dwEventState & SCARD_STATE_CHANGED));
	rs[1] = (SCARD_READERSTATE){.szReader = "", .dwCurrentState = 0};
	EXPECT(SCardGetStatusChange(c, 0, &rs[1], 1), OK);
	CHECK(rs[1].dwEventState & SCARD_STATE_UNKNOWN);
	/* Only ignored entries: nothing to wait for, answered at once. */
	rs[0].dwCurrentState = SCARD_STATE_IGNORE;
	rs[1].dwCurrentState = SCARD_STATE_IGNORE;
	EXPECT(SCardGetStatusChange(c, 2000, rs, 2), OK);
	EXPECT(SCardGetStatusChange(c, INFINITE, rs, 1), OK);
	EXPECT(SCardReleaseContext(c), OK);
}

static void connect_rules(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = 0, h2 = 0;
	DWORD proto = 0;

	EXPECT(SCardConnect(c, NULL, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), E_PARAM);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, NULL, &proto), E_PARAM);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, NULL), E_PARAM);
	EXPECT(SCardConnect(c, READER, 0, SCARD_PROTOCOL_T1, &h, &proto), E_VALUE);
	EXPECT(SCardConnect(c, READER, 4, SCARD_PROTOCOL_T1, &h, &proto), E_VALUE);
	EXPECT(SCardConnect(c, READER, (DWORD)-1, SCARD_PROTOCOL_T1, &h, &proto), E_VALUE);
	EXPECT(SCardConnect(c, "No such reader", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	       SCARD_E_UNKNOWN_READER);
	EXPECT(SCardConnect(c, "", SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	       SCARD_E_UNKNOWN_READER);
	EXPECT(SCardConnect(c, PNP, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	       SCARD_E_UNKNOWN_READER);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, &h, &proto),
	       SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_RAW, &h, &proto),
	       SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, 0, &h, &proto), E_VALUE);
	CHECK(h == 0);

	/* Sharing. */
	h = connect_shared(c);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &h2, &proto),
	       SCARD_E_SHARING_VIOLATION);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &h, &proto), OK);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h2, &proto),
	       SCARD_E_SHARING_VIOLATION);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_DIRECT, 0, &h2, &proto),
	       SCARD_E_SHARING_VIOLATION);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);

	/* A direct connection has no protocol to transmit with. */
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_DIRECT, 0, &h, &proto), OK);
	CHECK(proto == SCARD_PROTOCOL_UNDEFINED);
	EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, NULL), SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);

	/* Reconnect. */
	h = connect_shared(c);
	h2 = connect_shared(c);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, NULL), E_PARAM);
	EXPECT(SCardReconnect(h, 0, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), E_VALUE);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, 4, &proto), E_VALUE);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, (DWORD)-1, &proto), E_VALUE);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0, SCARD_LEAVE_CARD, &proto),
	       SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardReconnect(h, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto),
	       SCARD_E_SHARING_VIOLATION);
	EXPECT(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_RESET_CARD, &proto), OK);
	CHECK(proto == SCARD_PROTOCOL_T1);
	/* The other handle sees the reset until it reconnects. */
	EXPECT(tx(h2, SELECT_PIV, sizeof SELECT_PIV, NULL), SCARD_W_RESET_CARD);
	EXPECT(SCardBeginTransaction(h2), SCARD_W_RESET_CARD);
	EXPECT(SCardStatus(h2, NULL, NULL, NULL, NULL, NULL, NULL), SCARD_W_RESET_CARD);
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
	bad_handle_calls(h, E_HANDLE); /* stale */
	EXPECT(SCardReconnect(h2, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto), OK);
	EXPECT(SCardDisconnect(h2, SCARD_UNPOWER_CARD), OK);
	h = connect_shared(c);
	EXPECT(SCardDisconnect(h, SCARD_EJECT_CARD), OK);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), E_HANDLE);
	for (size_t i = 0; i < NFOREIGN; i++)
		bad_handle_calls(FOREIGN[i], E_HANDLE);
	EXPECT(SCardReleaseContext(c), OK);
}

static void transactions(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = connect_shared(c), h2 = connect_shared(c);

	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
	EXPECT(SCardBeginTransaction(h), OK);
	EXPECT(SCardBeginTransaction(h), OK); /* nested */
	EXPECT(SCardEndTransaction(h2, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
	EXPECT(SCardEndTransaction(h, 4), E_VALUE);
	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), SCARD_E_NOT_TRANSACTED);
	EXPECT(SCardBeginTransaction(h), OK);
	EXPECT(SCardEndTransaction(h, SCARD_RESET_CARD), OK);
	EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, NULL), OK); /* the resetting handle goes on */
	EXPECT(SCardEndTransaction(h2, SCARD_LEAVE_CARD), SCARD_W_RESET_CARD);
	DWORD proto;
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
	DWORD nl, al, state = 0, proto = 0;
	char *name = NULL;
	unsigned char *atr = NULL;
	const DWORD want_nl = sizeof READER;

	EXPECT(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL), OK);
	EXPECT(SCardStatus(h, NULL, NULL, &state, &proto, NULL, NULL), OK);
	CHECK(state == (SCARD_PRESENT | SCARD_POWERED | SCARD_NEGOTIABLE));
	CHECK(proto == SCARD_PROTOCOL_T1);
	nl = 0;
	al = 0;
	EXPECT(SCardStatus(h, NULL, &nl, NULL, NULL, NULL, &al), OK); /* lengths only */
	CHECK(nl == want_nl);
	const DWORD want_al = al;
	CHECK(want_al > 1 && want_al <= MAX_ATR_SIZE);
	/* A buffer without its length is ignored. */
	char dummy[8];
	EXPECT(SCardStatus(h, dummy, NULL, NULL, NULL, (LPBYTE)dummy, NULL), OK);

	for (DWORD n = 0; n < want_nl; n++) {
		char *b = malloc(n ? n : 1);
		nl = n;
		EXPECT(SCardStatus(h, b, &nl, NULL, NULL, NULL, NULL), E_BUF);
		CHECK(nl == want_nl);
		free(b);
	}
	for (DWORD n = 0; n < want_al; n++) {
		unsigned char *b = malloc(n ? n : 1);
		al = n;
		EXPECT(SCardStatus(h, NULL, NULL, NULL, NULL, b, &al), E_BUF);
		CHECK(al == want_al);
		free(b);
	}
	char *nb = malloc(want_nl);
	unsigned char *ab = malloc(want_al);
	nl = want_nl;
	al = want_al;
	EXPECT(SCardStatus(h, nb, &nl, &state, &proto, ab, &al), OK);
	CHECK(strcmp(nb, READER) == 0 && al == want_al && ab[0] == 0x3B);

	nl = SCARD_AUTOALLOCATE;
	EXPECT(SCardStatus(h, NULL, &nl, NULL, NULL, NULL, NULL), E_PARAM);
	al = SCARD_AUTOALLOCATE;
	EXPECT(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, &al), E_PARAM);
	nl = SCARD_AUTOALLOCATE;
	al = SCARD_AUTOALLOCATE;
	EXPECT(SCardStatus(h, (LPSTR)&name, &nl, &state, &proto, (LPBYTE)&atr, &al), OK);
	CHECK(name && atr && nl == want_nl && al == want_al && strcmp(name, READER) == 0 &&
	      memcmp(atr, ab, want_al) == 0);
	EXPECT(SCardFreeMemory(c, name), OK);
	EXPECT(SCardFreeMemory(c, atr), OK);
	EXPECT(SCardFreeMemory(c, atr), E_PARAM);
	free(nb);
	free(ab);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardReleaseContext(c), OK);
}

static void transmit_rules(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = connect_shared(c);
	unsigned char r[600];
	DWORD rl;
	SCARD_IO_REQUEST rpci = {0, 0};
	SCARD_IO_REQUEST bad_pci = {0, sizeof(SCARD_IO_REQUEST)};

#define T(send, n, out, len) SCardTransmit(h, SCARD_PCI_T1, send, n, NULL, out, len)
	rl = sizeof r;
	EXPECT(SCardTransmit(h, NULL, SELECT_PIV, sizeof SELECT_PIV, NULL, r, &rl), E_PARAM);
	EXPECT(T(NULL, sizeof SELECT_PIV, r, &rl), E_PARAM);
	EXPECT(T(SELECT_PIV, sizeof SELECT_PIV, NULL, &rl), E_PARAM);
	EXPECT(T(SELECT_PIV, sizeof SELECT_PIV, r, NULL), E_PARAM);
	EXPECT(T(SELECT_PIV, 0, r, &rl), E_PARAM);
	EXPECT(T(NULL, 0, NULL, NULL), E_PARAM);
	/* Lengths past any APDU, with a buffer that is much shorter. */
	EXPECT(T(SELECT_PIV, (DWORD)-1, r, &rl), E_PARAM);
	EXPECT(T(SELECT_PIV, (DWORD)1 << 40, r, &rl), E_PARAM);
	EXPECT(T(SELECT_PIV, MAX_APDU + 1, r, &rl), E_PARAM);
	/* Protocols the handle does not speak. */
	EXPECT(SCardTransmit(h, SCARD_PCI_RAW, SELECT_PIV, sizeof SELECT_PIV, NULL, r, &rl),
	       SCARD_E_PROTO_MISMATCH);
	EXPECT(SCardTransmit(h, &bad_pci, SELECT_PIV, sizeof SELECT_PIV, NULL, r, &rl),
	       SCARD_E_PROTO_MISMATCH);

	rl = sizeof r;
	EXPECT(SCardTransmit(h, SCARD_PCI_T1, SELECT_PIV, sizeof SELECT_PIV, &rpci, r, &rl), OK);
	CHECK(rl >= 2 && r[rl - 2] == 0x90 && r[rl - 1] == 0x00);
	CHECK(rpci.dwProtocol == SCARD_PROTOCOL_T1 && rpci.cbPciLength == sizeof rpci);
	rl = sizeof r;
	EXPECT(T(GET_CHUID, sizeof GET_CHUID, r, &rl), OK);
	const DWORD chuid_len = rl;
	CHECK(chuid_len > 20 && r[chuid_len - 2] == 0x90);
	/* Tiny receive buffers: the needed length comes back. */
	for (DWORD n = 0; n < chuid_len; n += (n < 4 ? 1 : 17)) {
		unsigned char *b = malloc(n ? n : 1);
		rl = n;
		EXPECT(T(GET_CHUID, sizeof GET_CHUID, b, &rl), E_BUF);
		CHECK(rl == chuid_len);
		free(b);
	}
	unsigned char *b = malloc(chuid_len);
	rl = chuid_len;
	EXPECT(T(GET_CHUID, sizeof GET_CHUID, b, &rl), OK);
	CHECK(rl == chuid_len && memcmp(b, r, chuid_len) == 0);
	free(b);

	/* Garbage of every short length, and the longest APDU: answered with a
	 * status word, never a crash. */
	srand(11);
	for (DWORD n = 1; n <= 300; n += (n < 16 ? 1 : 7)) {
		unsigned char *cmd = malloc(n);
		for (DWORD i = 0; i < n; i++)
			cmd[i] = (unsigned char)rand();
		if (n >= 2 && cmd[1] == 0x24)
			cmd[1] = 0x25; /* no CHANGE REFERENCE DATA roulette */
		rl = sizeof r;
		EXPECT(T(cmd, n, r, &rl), OK);
		CHECK(rl >= 2 && rl <= sizeof r);
		free(cmd);
	}
	unsigned char *longest = calloc(1, MAX_APDU);
	longest[1] = 0xCB;
	rl = sizeof r;
	EXPECT(T(longest, MAX_APDU, r, &rl), OK);
	CHECK(rl >= 2);
	free(longest);
	/* back to a known applet state */
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
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, NULL, 0, r, sizeof r, NULL), OK);
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, r, 4, r, 0, &n), OK);
	EXPECT(SCardControl(h, CM_IOCTL_GET_FEATURE_REQUEST, r, (DWORD)-1, r, sizeof r, &n), E_BUF);
	EXPECT(SCardControl(h, SCARD_CTL_CODE(1), NULL, 0, r, sizeof r, &n), SCARD_E_UNSUPPORTED_FEATURE);
	EXPECT(SCardControl(h, 0, NULL, 0, NULL, 0, NULL), SCARD_E_UNSUPPORTED_FEATURE);
	EXPECT(SCardControl(h, (DWORD)-1, r, 10, r, sizeof r, &n), SCARD_E_UNSUPPORTED_FEATURE);

	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardReleaseContext(c), OK);
}

static void attributes(void)
{
	SCARDCONTEXT c = establish();
	SCARDHANDLE h = connect_shared(c);
	const DWORD ids[] = {
		SCARD_ATTR_VENDOR_NAME, SCARD_ATTR_VENDOR_IFD_TYPE, SCARD_ATTR_VENDOR_IFD_VERSION,
		SCARD_ATTR_VENDOR_IFD_SERIAL_NO, SCARD_ATTR_CHANNEL_ID, SCARD_ATTR_ASYNC_PROTOCOL_TYPES,
		SCARD_ATTR_MAX_IFSD, SCARD_ATTR_CHARACTERISTICS, SCARD_ATTR_CURRENT_PROTOCOL_TYPE,
		SCARD_ATTR_ICC_PRESENCE, SCARD_ATTR_ICC_INTERFACE_STATUS, SCARD_ATTR_ATR_STRING,
		SCARD_ATTR_ICC_TYPE_PER_ATR, SCARD_ATTR_MAXINPUT, SCARD_ATTR_DEVICE_UNIT,
		SCARD_ATTR_DEVICE_IN_USE, SCARD_ATTR_DEVICE_FRIENDLY_NAME_A,
		SCARD_ATTR_DEVICE_SYSTEM_NAME_A, SCARD_ATTR_DEVICE_FRIENDLY_NAME_W,
		SCARD_ATTR_DEVICE_SYSTEM_NAME_W,
	};
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		DWORD len = 0, want;
		unsigned char *p = NULL;
		EXPECT(SCardGetAttrib(h, ids[i], NULL, NULL), E_PARAM);
		EXPECT(SCardGetAttrib(h, ids[i], NULL, &len), OK);
		want = len;
		CHECK(want > 0 && want < 256);
		for (DWORD n = 0; n < want; n++) {
			unsigned char *b = malloc(n ? n : 1);
			len = n;
			EXPECT(SCardGetAttrib(h, ids[i], b, &len), E_BUF);
			CHECK(len == want);
			free(b);
		}
		unsigned char *b = malloc(want);
		len = want;
		EXPECT(SCardGetAttrib(h, ids[i], b, &len), OK);
		CHECK(len == want);
		len = SCARD_AUTOALLOCATE;
		EXPECT(SCardGetAttrib(h, ids[i], NULL, &len), E_PARAM);
		len = SCARD_AUTOALLOCATE;
		EXPECT(SCardGetAttrib(h, ids[i], (LPBYTE)&p, &len), OK);
		CHECK(p && len == want && memcmp(p, b, want) == 0);
		EXPECT(SCardFreeMemory(c, p), OK);
		free(b);
	}
	DWORD len = 16;
	unsigned char buf[16];
	EXPECT(SCardGetAttrib(h, 0x12345678, buf, &len), SCARD_E_UNSUPPORTED_FEATURE);
	EXPECT(SCardGetAttrib(h, 0, NULL, &len), SCARD_E_UNSUPPORTED_FEATURE);
	EXPECT(SCardGetAttrib(h, (DWORD)-1, buf, &len), SCARD_E_UNSUPPORTED_FEATURE);

	/* SCardSetAttrib: nothing is settable, NULL / empty values are refused first. */
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, NULL, 4), E_PARAM);
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, buf, 0), E_PARAM);
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, NULL, 0), E_PARAM);
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, buf, sizeof buf), SCARD_E_UNSUPPORTED_FEATURE);
	EXPECT(SCardSetAttrib(h, (DWORD)-1, buf, (DWORD)-1), SCARD_E_UNSUPPORTED_FEATURE);
	EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
	EXPECT(SCardSetAttrib(h, SCARD_ATTR_VENDOR_NAME, buf, sizeof buf), E_HANDLE);
	EXPECT(SCardReleaseContext(c), OK);
}

/* ------------------------------------------------------------------ */
/* Threads                                                             */

#define HAMMER_THREADS 6
#define HAMMER_ROUNDS 15

/* Each thread: its own context and handle, the whole life cycle. */
static void *hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < HAMMER_ROUNDS; i++) {
		SCARDCONTEXT c = establish();
		char *readers = NULL;
		DWORD len = SCARD_AUTOALLOCATE;
		EXPECT(SCardListReaders(c, NULL, (LPSTR)&readers, &len), OK);
		EXPECT(SCardFreeMemory(c, readers), OK);
		SCARDHANDLE h = connect_shared(c);
		EXPECT(SCardBeginTransaction(h), OK);
		unsigned sw = 0;
		EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, &sw), OK);
		EXPECT(tx(h, GET_CHUID, sizeof GET_CHUID, &sw), OK);
		CHECK(sw == 0x9000);
		EXPECT(SCardEndTransaction(h, SCARD_LEAVE_CARD), OK);
		unsigned char *atr = NULL;
		DWORD al = SCARD_AUTOALLOCATE;
		EXPECT(SCardStatus(h, NULL, NULL, NULL, NULL, (LPBYTE)&atr, &al), OK);
		EXPECT(SCardFreeMemory(c, atr), OK);
		SCARD_READERSTATE rs = {.szReader = READER, .dwCurrentState = SCARD_STATE_UNAWARE};
		EXPECT(SCardGetStatusChange(c, 0, &rs, 1), OK);
		EXPECT(SCardDisconnect(h, SCARD_LEAVE_CARD), OK);
		EXPECT(tx(h, SELECT_PIV, sizeof SELECT_PIV, NULL), E_HANDLE);
		if (i % 2)
			connect_shared(c); /* left open: the release closes it */
		EXPECT(SCardReleaseContext(c), OK);
		EXPECT(SCardIsValidContext(c), E_HANDLE);
	}
	return NULL;
}

/* Handles shared between threads that connect, disconnect, reset and use
 * them at once: every call answers with success or the code for what the
 * other threads did to it. */
#define SLOTS 4
static SCARDCONTEXT shared_ctx;
static SCARDHANDLE slots[SLOTS];
static int stop_racing;

static void *racer_churn(void *arg)
{
	(void)arg;
	for (int i = 0; i < 40; i++) {
		int s = i % SLOTS;
		SCARDHANDLE old = __atomic_load_n(&slots[s], __ATOMIC_SEQ_CST);
		EXPECT2(SCardDisconnect(old, i % 3 == 0 ? SCARD_RESET_CARD : SCARD_LEAVE_CARD), OK, E_HANDLE);
		SCARDHANDLE h = 0;
		DWORD proto;
		EXPECT(SCardConnect(shared_ctx, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto), OK);
		__atomic_store_n(&slots[s], h, __ATOMIC_SEQ_CST);
	}
	__atomic_store_n(&stop_racing, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *racer_user(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	while (!__atomic_load_n(&stop_racing, __ATOMIC_SEQ_CST)) {
		SCARDHANDLE h = __atomic_load_n(&slots[rand_r(&seed) % SLOTS], __ATOMIC_SEQ_CST);
		unsigned char r[300];
		DWORD rl = sizeof r, proto;
		LONG rv = SCardTransmit(h, SCARD_PCI_T1, GET_CHUID, sizeof GET_CHUID, NULL, r, &rl);
		if (rv == SCARD_W_RESET_CARD) {
			EXPECT2(SCardReconnect(h, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD, &proto),
				OK, E_HANDLE);
			continue;
		}
		EXPECT2(rv, OK, E_HANDLE);
		rv = SCardBeginTransaction(h);
		if (rv == OK) {
			EXPECT_RACE(SCardStatus(h, NULL, NULL, NULL, NULL, NULL, NULL));
			EXPECT_RACE(SCardEndTransaction(h, SCARD_LEAVE_CARD));
		} else {
			EXPECT2(rv, E_HANDLE, SCARD_W_RESET_CARD);
		}
	}
	return NULL;
}

struct waiter {
	SCARDCONTEXT c;
	DWORD timeout;
	LONG rv;
	int done;
};

static void *wait_change(void *arg)
{
	struct waiter *w = arg;
	SCARD_READERSTATE rs = {.szReader = READER, .dwCurrentState = SCARD_STATE_UNAWARE};
	/* learn the current state, then wait for a change that never comes */
	LONG rv = SCardGetStatusChange(w->c, 0, &rs, 1);
	if (rv == OK) {
		rs.dwCurrentState = rs.dwEventState & ~(DWORD)SCARD_STATE_CHANGED;
		rv = SCardGetStatusChange(w->c, w->timeout, &rs, 1);
	}
	w->rv = rv;
	__atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void cancel_until_done(SCARDCONTEXT c, struct waiter *w, int n)
{
	for (;;) {
		int all = 1;
		for (int i = 0; i < n; i++)
			all &= __atomic_load_n(&w[i].done, __ATOMIC_SEQ_CST);
		if (all)
			return;
		msleep(50);
		EXPECT(SCardCancel(c), OK);
	}
}

struct tx_arg {
	SCARDHANDLE h;
	LONG rv;
};

static void *tx_thread(void *arg)
{
	struct tx_arg *a = arg;
	a->rv = tx(a->h, GET_CHUID, sizeof GET_CHUID, NULL);
	return NULL;
}

static void *begin_thread(void *arg)
{
	struct tx_arg *a = arg;
	a->rv = SCardBeginTransaction(a->h);
	if (a->rv == OK)
		EXPECT(SCardEndTransaction(a->h, SCARD_LEAVE_CARD), OK);
	return NULL;
}

static void threads(void)
{
	pthread_t t[HAMMER_THREADS + 4];

	fprintf(stderr, "  hammer: %d threads x %d life cycles\n", HAMMER_THREADS, HAMMER_ROUNDS);
	for (int i = 0; i < HAMMER_THREADS; i++)
		pthread_create(&t[i], NULL, hammer, NULL);
	for (int i = 0; i < HAMMER_THREADS; i++)
		pthread_join(t[i], NULL);

	fprintf(stderr, "  racing handles\n");
	shared_ctx = establish();
	for (int i = 0; i < SLOTS; i++)
		slots[i] = connect_shared(shared_ctx);
	pthread_create(&t[0], NULL, racer_churn, NULL);
	for (int i = 1; i <= 3; i++)
		pthread_create(&t[i], NULL, racer_user, (void *)(uintptr_t)i);
	for (int i = 0; i <= 3; i++)
		pthread_join(t[i], NULL);
	/* The context goes while users are still at it. */
	__atomic_store_n(&stop_racing, 0, __ATOMIC_SEQ_CST);
	for (int i = 1; i <= 3; i++)
		pthread_create(&t[i], NULL, racer_user, (void *)(uintptr_t)(i + 10));
	msleep(100);
	EXPECT(SCardReleaseContext(shared_ctx), OK);
	msleep(50);
	__atomic_store_n(&stop_racing, 1, __ATOMIC_SEQ_CST);
	for (int i = 1; i <= 3; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < SLOTS; i++)
		EXPECT(SCardStatus(slots[i], NULL, NULL, NULL, NULL, NULL, NULL), E_HANDLE);

	fprintf(stderr, "  GetStatusChange + SCardCancel\n");
	SCARDCONTEXT c = establish(), other = establish();
	struct waiter w[3] = {{c, INFINITE, 0, 0}, {c, 60000, 0, 0}, {other, 400, 0, 0}};
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, wait_change, &w[i]);
	cancel_until_done(c, w, 2);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	EXPECT(w[0].rv, SCARD_E_CANCELLED);
	EXPECT(w[1].rv, SCARD_E_CANCELLED);
	EXPECT(w[2].rv, SCARD_E_TIMEOUT); /* another context's cancel is not ours */
	/* A cancel with no one waiting does not cancel the next wait. */
	EXPECT(SCardCancel(c), OK);
	struct waiter late = {c, 50, 0, 0};
	wait_change(&late);
	EXPECT(late.rv, SCARD_E_TIMEOUT);
	/* Releasing the context ends a wait on it. */
	struct waiter r = {other, INFINITE, 0, 0};
	pthread_create(&t[0], NULL, wait_change, &r);
	msleep(300);
	EXPECT(SCardReleaseContext(other), OK);
	pthread_join(t[0], NULL);
	EXPECT2(r.rv, E_HANDLE, SCARD_E_CANCELLED);

	fprintf(stderr, "  transactions across threads\n");
	SCARDHANDLE h1 = connect_shared(c), h2 = connect_shared(c);
	struct tx_arg a = {h2, -1};
	EXPECT(SCardBeginTransaction(h1), OK);
	pthread_create(&t[0], NULL, tx_thread, &a);
	msleep(200);
	CHECK(a.rv == -1); /* still waiting for h1's transaction */
	EXPECT(SCardEndTransaction(h1, SCARD_LEAVE_CARD), OK);
	pthread_join(t[0], NULL);
	EXPECT(a.rv, OK);
	/* The holder disconnects: the waiter gets its turn. */
	a.rv = -1;
	EXPECT(SCardBeginTransaction(h1), OK);
	pthread_create(&t[0], NULL, begin_thread, &a);
	msleep(200);
	CHECK(a.rv == -1);
	EXPECT(SCardDisconnect(h1, SCARD_LEAVE_CARD), OK);
	pthread_join(t[0], NULL);
	EXPECT(a.rv, OK);
	/* The waiter's own handle is closed under it. */
	SCARDCONTEXT c2 = establish();
	SCARDHANDLE h3 = connect_shared(c2);
	a = (struct tx_arg){h3, -1};
	EXPECT(SCardBeginTransaction(h2), OK);
	pthread_create(&t[0], NULL, tx_thread, &a);
	msleep(200);
	EXPECT(SCardReleaseContext(c2), OK); /* closes h3 */
	EXPECT(SCardEndTransaction(h2, SCARD_LEAVE_CARD), OK);
	pthread_join(t[0], NULL);
	EXPECT2(a.rv, E_HANDLE, OK);
	EXPECT(SCardReleaseContext(c), OK);
}

/* ------------------------------------------------------------------ */

static void no_readers(void)
{
	SCARDCONTEXT c = establish();
	char buf[64];
	DWORD len = sizeof buf, proto;
	SCARDHANDLE h;
	EXPECT(SCardListReaders(c, NULL, buf, &len), SCARD_E_NO_READERS_AVAILABLE);
	len = 0;
	EXPECT(SCardListReaders(c, NULL, NULL, &len), SCARD_E_NO_READERS_AVAILABLE);
	EXPECT(SCardConnect(c, READER, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T1, &h, &proto),
	       SCARD_E_UNKNOWN_READER);
	SCARD_READERSTATE rs[2] = {{.szReader = READER}, {.szReader = PNP}};
	EXPECT(SCardGetStatusChange(c, 0, rs, 2), OK);
	CHECK(rs[0].dwEventState == (SCARD_STATE_UNKNOWN | SCARD_STATE_CHANGED));
	CHECK((rs[1].dwEventState >> 16) == 0);
	rs[1].dwCurrentState = 0;
	EXPECT(SCardGetStatusChange(c, 20, &rs[1], 1), SCARD_E_TIMEOUT);
	bad_handle_calls(0x01000022, E_HANDLE);
	EXPECT(SCardReleaseContext(c), OK);
}

static void no_service(void)
{
	const LONG NS = SCARD_E_NO_SERVICE;
	SCARDCONTEXT c = 0;
	EXPECT(SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &c), NS);
	bad_context_calls(0x01000011, NS);
	bad_handle_calls(0x01000022, NS);
	EXPECT(SCardFreeMemory(0, NULL), OK);
	EXPECT(SCardFreeMemory(0, &c), E_PARAM);
	CHECK(strcmp(pcsc_stringify_error(NS), "Service not available.") == 0);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "card";

	setvbuf(stderr, NULL, _IONBF, 0);
	fprintf(stderr, "ffi abuse: mode %s\n", mode);
	stringify_and_pcis();
	if (strcmp(mode, "noservice") == 0) {
		no_service();
	} else if (strcmp(mode, "noreaders") == 0) {
		contexts(0);
		no_readers();
	} else if (strcmp(mode, "card") == 0) {
		fprintf(stderr, " contexts\n");
		contexts(1);
		fprintf(stderr, " listing\n");
		listing();
		fprintf(stderr, " status change\n");
		status_change();
		fprintf(stderr, " connect / reconnect / disconnect\n");
		connect_rules();
		fprintf(stderr, " transactions\n");
		transactions();
		fprintf(stderr, " status\n");
		status_rules();
		fprintf(stderr, " transmit / control\n");
		transmit_rules();
		fprintf(stderr, " attributes\n");
		attributes();
		fprintf(stderr, " threads\n");
		threads();
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	fprintf(stderr, "ffi abuse: mode %s: %d checks, %d failed\n", mode, checks, failures);
	return failures ? 1 : 0;
}
