//! The WinSCard ABI of winscard.dll: every export under its real name, A and
//! W variants, `extern "system"`, types from windows-sys. Each function only
//! checks pointers, converts strings and integers, and calls the core.
#![allow(
    non_snake_case,
    non_upper_case_globals,
    clippy::missing_safety_doc,
    clippy::upper_case_acronyms
)]

use std::ffi::c_void;
use std::sync::OnceLock;

use windows_sys::core::GUID;
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Security::Credentials::{
    SCARD_IO_REQUEST, SCARD_READERSTATEA, SCARD_READERSTATEW,
};

use crate::abi_util::{self as u, guard};
use crate::consts;
use crate::error::{ScardError, ScardResult};
use crate::shim::{self, CardState, Control, Disposition, ReaderStateIo, Share};

type LONG = i32;
type DWORD = u32;
type SCARDCONTEXT = usize;
type SCARDHANDLE = usize;

const PCI_LEN: u32 = std::mem::size_of::<SCARD_IO_REQUEST>() as u32;
/// Windows' SCARD_PROTOCOL_RAW.
const WIN_PROTOCOL_RAW: u32 = 0x0001_0000;

#[no_mangle]
pub static g_rgSCardT0Pci: SCARD_IO_REQUEST = SCARD_IO_REQUEST {
    dwProtocol: 1,
    cbPciLength: PCI_LEN,
};
#[no_mangle]
pub static g_rgSCardT1Pci: SCARD_IO_REQUEST = SCARD_IO_REQUEST {
    dwProtocol: 2,
    cbPciLength: PCI_LEN,
};
#[no_mangle]
pub static g_rgSCardRawPci: SCARD_IO_REQUEST = SCARD_IO_REQUEST {
    dwProtocol: WIN_PROTOCOL_RAW,
    cbPciLength: PCI_LEN,
};

/// Windows' CM_IOCTL_GET_FEATURE_REQUEST = SCARD_CTL_CODE(3400).
const GET_FEATURE_REQUEST: u32 = 0x0031_0000 | (3400 << 2);

/// What Windows answers for handle 0 in SCardReleaseContext, SCardCancel
/// and SCardDisconnect, and for any invalid context in SCardIsValidContext:
/// the Win32 ERROR_INVALID_HANDLE, not SCARD_E_INVALID_HANDLE (Microsoft's
/// documentation; Wine's conformance tests, which also run on Windows).
const WIN32_INVALID_HANDLE: LONG = windows_sys::Win32::Foundation::ERROR_INVALID_HANDLE as LONG;

fn run(name: &'static str, f: impl FnOnce() -> ScardResult<()>) -> LONG {
    match guard(name, f) {
        Ok(()) => 0,
        Err(e) => e.windows_code() as LONG,
    }
}

fn ctx_opt(h: SCARDCONTEXT) -> Option<u64> {
    (h != 0).then_some(h as u64)
}

fn to_core_protocols(p: u32) -> u32 {
    (p & 0x3)
        | if p & WIN_PROTOCOL_RAW != 0 {
            shim::protocol::RAW
        } else {
            0
        }
}

fn to_win_protocol(p: u32) -> u32 {
    if p == shim::protocol::RAW {
        WIN_PROTOCOL_RAW
    } else {
        p
    }
}

/// ANSI or UTF-16 strings.
trait Text: Copy {
    unsafe fn read(p: *const Self) -> Option<String>;
    unsafe fn read_multi(p: *const Self) -> Option<Vec<String>>;
    fn multi(items: &[String]) -> Vec<Self>;
    fn one(s: &str) -> Vec<Self>;
}

impl Text for u8 {
    unsafe fn read(p: *const u8) -> Option<String> {
        u::cstr(p)
    }
    unsafe fn read_multi(p: *const u8) -> Option<Vec<String>> {
        u::multi_cstr(p)
    }
    fn multi(items: &[String]) -> Vec<u8> {
        u::multi_a(items)
    }
    fn one(s: &str) -> Vec<u8> {
        u::one_a(s)
    }
}

impl Text for u16 {
    unsafe fn read(p: *const u16) -> Option<String> {
        u::wstr(p)
    }
    unsafe fn read_multi(p: *const u16) -> Option<Vec<String>> {
        u::multi_wstr(p)
    }
    fn multi(items: &[String]) -> Vec<u16> {
        u::multi_w(items)
    }
    fn one(s: &str) -> Vec<u16> {
        u::one_w(s)
    }
}

// ---- contexts ---------------------------------------------------------------

#[no_mangle]
pub unsafe extern "system" fn SCardEstablishContext(
    dwScope: DWORD,
    _pvReserved1: *const c_void,
    _pvReserved2: *const c_void,
    phContext: *mut SCARDCONTEXT,
) -> LONG {
    run("SCardEstablishContext", || {
        if phContext.is_null() {
            return Err(ScardError::InvalidParameter);
        }
        *phContext = crate::global()?.establish_context(dwScope)? as SCARDCONTEXT;
        Ok(())
    })
}

#[no_mangle]
pub extern "system" fn SCardReleaseContext(hContext: SCARDCONTEXT) -> LONG {
    if hContext == 0 {
        return WIN32_INVALID_HANDLE;
    }
    run("SCardReleaseContext", || {
        crate::global()?.release_context(hContext as u64)
    })
}

#[no_mangle]
pub extern "system" fn SCardIsValidContext(hContext: SCARDCONTEXT) -> LONG {
    let rc = run("SCardIsValidContext", || {
        crate::global()?.is_valid_context(hContext as u64)
    });
    // Windows documents this call's answer for a context that is not one
    // as the Win32 ERROR_INVALID_HANDLE, not SCARD_E_INVALID_HANDLE.
    if rc == ScardError::InvalidHandle.windows_code() as LONG {
        WIN32_INVALID_HANDLE
    } else {
        rc
    }
}

#[no_mangle]
pub extern "system" fn SCardCancel(hContext: SCARDCONTEXT) -> LONG {
    if hContext == 0 {
        return WIN32_INVALID_HANDLE;
    }
    run("SCardCancel", || crate::global()?.cancel(hContext as u64))
}

#[no_mangle]
pub unsafe extern "system" fn SCardFreeMemory(
    _hContext: SCARDCONTEXT,
    pvMem: *const c_void,
) -> LONG {
    run("SCardFreeMemory", || {
        if u::free(pvMem) {
            Ok(())
        } else {
            Err(ScardError::InvalidParameter)
        }
    })
}

#[no_mangle]
pub extern "system" fn SCardAudit(hContext: SCARDCONTEXT, _dwEvent: DWORD) -> LONG {
    run("SCardAudit", || {
        crate::global()?.is_valid_context(hContext as u64)
    })
}

static STARTED_EVENT: OnceLock<usize> = OnceLock::new();

/// An event that is always signalled: the resource manager is this DLL,
/// so it is running as soon as anyone can ask.
#[no_mangle]
pub extern "system" fn SCardAccessStartedEvent() -> HANDLE {
    let h = std::panic::catch_unwind(|| {
        *STARTED_EVENT.get_or_init(|| {
            // SAFETY: plain Win32 call with NULL attributes and name.
            unsafe {
                windows_sys::Win32::System::Threading::CreateEventW(
                    std::ptr::null(),
                    1,
                    1,
                    std::ptr::null(),
                ) as usize
            }
        })
    });
    h.unwrap_or(0) as HANDLE
}

#[no_mangle]
pub extern "system" fn SCardReleaseStartedEvent() {}

// ---- readers and cards ----------------------------------------------------

unsafe fn list_readers<T: Text>(
    ctx: SCARDCONTEXT,
    groups: *const T,
    out: *mut T,
    len: *mut DWORD,
) -> ScardResult<()> {
    let groups = T::read_multi(groups);
    let names = crate::global()?.list_readers(ctx_opt(ctx), groups.as_deref())?;
    u::write_out(&T::multi(&names), out, len, true)
}

#[no_mangle]
pub unsafe extern "system" fn SCardListReadersA(
    h: SCARDCONTEXT,
    g: *const u8,
    r: *mut u8,
    l: *mut DWORD,
) -> LONG {
    run("SCardListReadersA", || list_readers(h, g, r, l))
}

#[no_mangle]
pub unsafe extern "system" fn SCardListReadersW(
    h: SCARDCONTEXT,
    g: *const u16,
    r: *mut u16,
    l: *mut DWORD,
) -> LONG {
    run("SCardListReadersW", || list_readers(h, g, r, l))
}

unsafe fn list_groups<T: Text>(ctx: SCARDCONTEXT, out: *mut T, len: *mut DWORD) -> ScardResult<()> {
    let g = crate::global()?.list_reader_groups(ctx_opt(ctx))?;
    u::write_out(&T::multi(&g), out, len, true)
}

#[no_mangle]
pub unsafe extern "system" fn SCardListReaderGroupsA(
    h: SCARDCONTEXT,
    g: *mut u8,
    l: *mut DWORD,
) -> LONG {
    run("SCardListReaderGroupsA", || list_groups(h, g, l))
}

#[no_mangle]
pub unsafe extern "system" fn SCardListReaderGroupsW(
    h: SCARDCONTEXT,
    g: *mut u16,
    l: *mut DWORD,
) -> LONG {
    run("SCardListReaderGroupsW", || list_groups(h, g, l))
}

unsafe fn list_cards<T: Text>(ctx: SCARDCONTEXT, out: *mut T, len: *mut DWORD) -> ScardResult<()> {
    let cards = crate::global()?.list_cards(ctx_opt(ctx))?;
    u::write_out(&T::multi(&cards), out, len, true)
}

#[no_mangle]
pub unsafe extern "system" fn SCardListCardsA(
    h: SCARDCONTEXT,
    _pbAtr: *const u8,
    _rgguidInterfaces: *const GUID,
    _cguidInterfaceCount: DWORD,
    mszCards: *mut u8,
    pcchCards: *mut DWORD,
) -> LONG {
    run("SCardListCardsA", || list_cards(h, mszCards, pcchCards))
}

#[no_mangle]
pub unsafe extern "system" fn SCardListCardsW(
    h: SCARDCONTEXT,
    _pbAtr: *const u8,
    _rgguidInterfaces: *const GUID,
    _cguidInterfaceCount: DWORD,
    mszCards: *mut u16,
    pcchCards: *mut DWORD,
) -> LONG {
    run("SCardListCardsW", || list_cards(h, mszCards, pcchCards))
}

unsafe fn provider_name<T: Text>(
    ctx: SCARDCONTEXT,
    card: *const T,
    id: DWORD,
    out: *mut T,
    len: *mut DWORD,
) -> ScardResult<()> {
    let card = T::read(card).ok_or(ScardError::InvalidParameter)?;
    let name = crate::global()?.card_type_provider_name(ctx_opt(ctx), &card, id)?;
    u::write_out(&T::one(&name), out, len, true)
}

#[no_mangle]
pub unsafe extern "system" fn SCardGetCardTypeProviderNameA(
    h: SCARDCONTEXT,
    c: *const u8,
    id: DWORD,
    p: *mut u8,
    l: *mut DWORD,
) -> LONG {
    run("SCardGetCardTypeProviderNameA", || {
        provider_name(h, c, id, p, l)
    })
}

#[no_mangle]
pub unsafe extern "system" fn SCardGetCardTypeProviderNameW(
    h: SCARDCONTEXT,
    c: *const u16,
    id: DWORD,
    p: *mut u16,
    l: *mut DWORD,
) -> LONG {
    run("SCardGetCardTypeProviderNameW", || {
        provider_name(h, c, id, p, l)
    })
}

unsafe fn device_type<T: Text>(
    ctx: SCARDCONTEXT,
    reader: *const T,
    out: *mut DWORD,
) -> ScardResult<()> {
    let reader = T::read(reader).ok_or(ScardError::InvalidParameter)?;
    if out.is_null() {
        return Err(ScardError::InvalidParameter);
    }
    *out = crate::global()?.device_type_id(ctx as u64, &reader)?;
    Ok(())
}

#[no_mangle]
pub unsafe extern "system" fn SCardGetDeviceTypeIdA(
    h: SCARDCONTEXT,
    r: *const u8,
    t: *mut DWORD,
) -> LONG {
    run("SCardGetDeviceTypeIdA", || device_type(h, r, t))
}

#[no_mangle]
pub unsafe extern "system" fn SCardGetDeviceTypeIdW(
    h: SCARDCONTEXT,
    r: *const u16,
    t: *mut DWORD,
) -> LONG {
    run("SCardGetDeviceTypeIdW", || device_type(h, r, t))
}

/// The A and W reader-state structs differ only in the name's type.
trait ReaderState {
    type Ch: Text;
    fn name(&self) -> *const Self::Ch;
    fn fields(&mut self) -> (&mut u32, &mut u32, &mut u32, &mut [u8; 36]);
}

impl ReaderState for SCARD_READERSTATEA {
    type Ch = u8;
    fn name(&self) -> *const u8 {
        self.szReader
    }
    fn fields(&mut self) -> (&mut u32, &mut u32, &mut u32, &mut [u8; 36]) {
        (
            &mut self.dwCurrentState,
            &mut self.dwEventState,
            &mut self.cbAtr,
            &mut self.rgbAtr,
        )
    }
}

impl ReaderState for SCARD_READERSTATEW {
    type Ch = u16;
    fn name(&self) -> *const u16 {
        self.szReader
    }
    fn fields(&mut self) -> (&mut u32, &mut u32, &mut u32, &mut [u8; 36]) {
        (
            &mut self.dwCurrentState,
            &mut self.dwEventState,
            &mut self.cbAtr,
            &mut self.rgbAtr,
        )
    }
}

unsafe fn status_change<R: ReaderState>(
    ctx: SCARDCONTEXT,
    timeout: DWORD,
    states: *mut R,
    n: DWORD,
) -> ScardResult<()> {
    let shim = crate::global()?;
    if n == 0 {
        return shim.is_valid_context(ctx as u64);
    }
    if states.is_null() {
        return Err(ScardError::InvalidParameter);
    }
    let n = u::slice_len::<R>(n as usize, usize::MAX).ok_or(ScardError::InvalidParameter)?;
    let rs = std::slice::from_raw_parts_mut(states, n);
    let mut io = Vec::with_capacity(rs.len());
    for r in rs.iter_mut() {
        let name = <R::Ch as Text>::read(r.name()).ok_or(ScardError::InvalidValue)?;
        let current = *r.fields().0;
        io.push(ReaderStateIo {
            name,
            current,
            ..Default::default()
        });
    }
    let res = shim.get_status_change(ctx as u64, timeout, &mut io);
    if matches!(res, Ok(()) | Err(ScardError::Timeout)) {
        for (r, s) in rs.iter_mut().zip(&io) {
            let (_, event, cb, atr) = r.fields();
            *event = s.event;
            let k = s.atr.len().min(atr.len());
            atr[..k].copy_from_slice(&s.atr[..k]);
            *cb = k as u32;
        }
    }
    res
}

#[no_mangle]
pub unsafe extern "system" fn SCardGetStatusChangeA(
    h: SCARDCONTEXT,
    t: DWORD,
    s: *mut SCARD_READERSTATEA,
    n: DWORD,
) -> LONG {
    run("SCardGetStatusChangeA", || status_change(h, t, s, n))
}

#[no_mangle]
pub unsafe extern "system" fn SCardGetStatusChangeW(
    h: SCARDCONTEXT,
    t: DWORD,
    s: *mut SCARD_READERSTATEW,
    n: DWORD,
) -> LONG {
    run("SCardGetStatusChangeW", || status_change(h, t, s, n))
}

// ---- card handles ----------------------------------------------------------

unsafe fn connect<T: Text>(
    ctx: SCARDCONTEXT,
    reader: *const T,
    share: DWORD,
    preferred: DWORD,
    ph: *mut SCARDHANDLE,
    proto: *mut DWORD,
) -> ScardResult<()> {
    let reader = T::read(reader).ok_or(ScardError::InvalidParameter)?;
    if ph.is_null() {
        return Err(ScardError::InvalidParameter);
    }
    let (h, p) = crate::global()?.connect(
        ctx as u64,
        &reader,
        Share::from_u32(share)?,
        to_core_protocols(preferred),
    )?;
    *ph = h as SCARDHANDLE;
    u::put(proto, to_win_protocol(p));
    Ok(())
}

#[no_mangle]
pub unsafe extern "system" fn SCardConnectA(
    h: SCARDCONTEXT,
    r: *const u8,
    s: DWORD,
    p: DWORD,
    ph: *mut SCARDHANDLE,
    pp: *mut DWORD,
) -> LONG {
    run("SCardConnectA", || connect(h, r, s, p, ph, pp))
}

#[no_mangle]
pub unsafe extern "system" fn SCardConnectW(
    h: SCARDCONTEXT,
    r: *const u16,
    s: DWORD,
    p: DWORD,
    ph: *mut SCARDHANDLE,
    pp: *mut DWORD,
) -> LONG {
    run("SCardConnectW", || connect(h, r, s, p, ph, pp))
}

#[no_mangle]
pub unsafe extern "system" fn SCardReconnect(
    hCard: SCARDHANDLE,
    dwShareMode: DWORD,
    dwPreferredProtocols: DWORD,
    dwInitialization: DWORD,
    pdwActiveProtocol: *mut DWORD,
) -> LONG {
    run("SCardReconnect", || {
        let p = crate::global()?.reconnect(
            hCard as u64,
            Share::from_u32(dwShareMode)?,
            to_core_protocols(dwPreferredProtocols),
            Disposition::from_u32(dwInitialization)?,
        )?;
        u::put(pdwActiveProtocol, to_win_protocol(p));
        Ok(())
    })
}

#[no_mangle]
pub extern "system" fn SCardDisconnect(hCard: SCARDHANDLE, dwDisposition: DWORD) -> LONG {
    if hCard == 0 {
        return WIN32_INVALID_HANDLE;
    }
    run("SCardDisconnect", || {
        crate::global()?.disconnect(hCard as u64, Disposition::from_u32(dwDisposition)?)
    })
}

#[no_mangle]
pub extern "system" fn SCardBeginTransaction(hCard: SCARDHANDLE) -> LONG {
    run("SCardBeginTransaction", || {
        crate::global()?.begin_transaction(hCard as u64)
    })
}

#[no_mangle]
pub extern "system" fn SCardEndTransaction(hCard: SCARDHANDLE, dwDisposition: DWORD) -> LONG {
    run("SCardEndTransaction", || {
        crate::global()?.end_transaction(hCard as u64, Disposition::from_u32(dwDisposition)?)
    })
}

unsafe fn status<T: Text>(
    h: SCARDHANDLE,
    names: *mut T,
    names_len: *mut DWORD,
    state: *mut DWORD,
    proto: *mut DWORD,
    atr: *mut u8,
    atr_len: *mut DWORD,
) -> ScardResult<()> {
    let st = crate::global()?.status(h as u64)?;
    // Windows' ordinal states: SCARD_SPECIFIC 6, SCARD_ABSENT 1.
    u::put(
        state,
        if st.state == CardState::Specific {
            6
        } else {
            1
        },
    );
    u::put(proto, to_win_protocol(st.protocol));
    if !names_len.is_null() {
        u::write_out(
            &T::multi(std::slice::from_ref(&st.reader)),
            names,
            names_len,
            true,
        )?;
    }
    if !atr_len.is_null() {
        u::write_out(&st.atr, atr, atr_len, true)?;
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "system" fn SCardStatusA(
    h: SCARDHANDLE,
    n: *mut u8,
    nl: *mut DWORD,
    s: *mut DWORD,
    p: *mut DWORD,
    a: *mut u8,
    al: *mut DWORD,
) -> LONG {
    run("SCardStatusA", || status(h, n, nl, s, p, a, al))
}

#[no_mangle]
pub unsafe extern "system" fn SCardStatusW(
    h: SCARDHANDLE,
    n: *mut u16,
    nl: *mut DWORD,
    s: *mut DWORD,
    p: *mut DWORD,
    a: *mut u8,
    al: *mut DWORD,
) -> LONG {
    run("SCardStatusW", || status(h, n, nl, s, p, a, al))
}

#[no_mangle]
pub unsafe extern "system" fn SCardTransmit(
    hCard: SCARDHANDLE,
    pioSendPci: *const SCARD_IO_REQUEST,
    pbSendBuffer: *const u8,
    cbSendLength: DWORD,
    pioRecvPci: *mut SCARD_IO_REQUEST,
    pbRecvBuffer: *mut u8,
    pcbRecvLength: *mut DWORD,
) -> LONG {
    run("SCardTransmit", || {
        if pbSendBuffer.is_null() || pbRecvBuffer.is_null() || pcbRecvLength.is_null() {
            return Err(ScardError::InvalidParameter);
        }
        // Checked before the slice exists (see u::slice_len).
        let n = u::slice_len::<u8>(cbSendLength as usize, consts::MAX_APDU)
            .ok_or(ScardError::InvalidParameter)?;
        let apdu = std::slice::from_raw_parts(pbSendBuffer, n);
        // Windows accepts a NULL send PCI and uses the card's protocol
        // (Wine's conformance tests, run on Windows, show it).
        let proto = (!pioSendPci.is_null()).then(|| to_core_protocols((*pioSendPci).dwProtocol));
        let resp = crate::global()?.transmit(hCard as u64, proto, apdu)?;
        if !pioRecvPci.is_null() {
            (*pioRecvPci).dwProtocol = shim::protocol::T1;
            (*pioRecvPci).cbPciLength = PCI_LEN;
        }
        u::write_out(&resp, pbRecvBuffer, pcbRecvLength, false)
    })
}

#[no_mangle]
pub unsafe extern "system" fn SCardControl(
    hCard: SCARDHANDLE,
    dwControlCode: DWORD,
    lpInBuffer: *const c_void,
    cbInBufferSize: DWORD,
    lpOutBuffer: *mut c_void,
    cbOutBufferSize: DWORD,
    lpBytesReturned: *mut DWORD,
) -> LONG {
    run("SCardControl", || {
        let input = if lpInBuffer.is_null() {
            &[][..]
        } else {
            // As pcsc-lite answers an input past its largest buffer.
            let n = u::slice_len::<u8>(cbInBufferSize as usize, consts::MAX_APDU)
                .ok_or(ScardError::InsufficientBuffer)?;
            std::slice::from_raw_parts(lpInBuffer.cast::<u8>(), n)
        };
        let c = if dwControlCode == GET_FEATURE_REQUEST {
            Control::GetFeatureRequest
        } else {
            Control::Other(dwControlCode)
        };
        let out = crate::global()?.control(hCard as u64, c, input)?;
        // Required on Windows (optional in pcsc-lite).
        if lpBytesReturned.is_null() {
            return Err(ScardError::InvalidParameter);
        }
        u::copy_fixed(
            &out,
            lpOutBuffer.cast::<u8>(),
            cbOutBufferSize as usize,
            lpBytesReturned,
        )
    })
}

#[no_mangle]
pub unsafe extern "system" fn SCardGetAttrib(
    hCard: SCARDHANDLE,
    dwAttrId: DWORD,
    pbAttr: *mut u8,
    pcbAttrLen: *mut DWORD,
) -> LONG {
    run("SCardGetAttrib", || {
        let v = crate::global()?.get_attrib(hCard as u64, dwAttrId)?;
        u::write_out(&v, pbAttr, pcbAttrLen, true)
    })
}

// ---- cache ------------------------------------------------------------------

unsafe fn card_id(p: *const GUID) -> ScardResult<[u8; 16]> {
    if p.is_null() {
        return Err(ScardError::InvalidParameter);
    }
    // The identifier's bytes as they lie in memory.
    Ok(std::ptr::read_unaligned(p.cast::<[u8; 16]>()))
}

unsafe fn read_cache<T: Text>(
    ctx: SCARDCONTEXT,
    id: *const GUID,
    freshness: DWORD,
    name: *const T,
    data: *mut u8,
    len: *mut DWORD,
) -> ScardResult<()> {
    let id = card_id(id)?;
    let name = T::read(name).ok_or(ScardError::InvalidParameter)?;
    let v = crate::global()?.read_cache(ctx as u64, &id, freshness, &name);
    tracing::debug!(
        "SCardReadCache {name:?} freshness {freshness} -> {}",
        v.as_ref()
            .map_or_else(|e| e.name().to_string(), |v| format!("{} bytes", v.len()))
    );
    u::write_out(&v?, data, len, true)
}

#[no_mangle]
pub unsafe extern "system" fn SCardReadCacheA(
    h: SCARDCONTEXT,
    id: *const GUID,
    f: DWORD,
    n: *const u8,
    d: *mut u8,
    l: *mut DWORD,
) -> LONG {
    run("SCardReadCacheA", || read_cache(h, id, f, n, d, l))
}

#[no_mangle]
pub unsafe extern "system" fn SCardReadCacheW(
    h: SCARDCONTEXT,
    id: *const GUID,
    f: DWORD,
    n: *const u16,
    d: *mut u8,
    l: *mut DWORD,
) -> LONG {
    run("SCardReadCacheW", || read_cache(h, id, f, n, d, l))
}

unsafe fn write_cache<T: Text>(
    ctx: SCARDCONTEXT,
    id: *const GUID,
    freshness: DWORD,
    name: *const T,
    data: *const u8,
    len: DWORD,
) -> ScardResult<()> {
    let id = card_id(id)?;
    let name = T::read(name).ok_or(ScardError::InvalidParameter)?;
    if data.is_null() && len != 0 {
        return Err(ScardError::InvalidParameter);
    }
    let bytes = if len == 0 {
        &[][..]
    } else {
        let n = u::slice_len::<u8>(len as usize, usize::MAX).ok_or(ScardError::InvalidParameter)?;
        std::slice::from_raw_parts(data, n)
    };
    tracing::debug!("SCardWriteCache {name:?} freshness {freshness}, {len} bytes");
    crate::global()?.write_cache(ctx as u64, &id, freshness, &name, bytes)
}

#[no_mangle]
pub unsafe extern "system" fn SCardWriteCacheA(
    h: SCARDCONTEXT,
    id: *const GUID,
    f: DWORD,
    n: *const u8,
    d: *const u8,
    l: DWORD,
) -> LONG {
    run("SCardWriteCacheA", || write_cache(h, id, f, n, d, l))
}

#[no_mangle]
pub unsafe extern "system" fn SCardWriteCacheW(
    h: SCARDCONTEXT,
    id: *const GUID,
    f: DWORD,
    n: *const u16,
    d: *const u8,
    l: DWORD,
) -> LONG {
    run("SCardWriteCacheW", || write_cache(h, id, f, n, d, l))
}

// ---- everything else ---------------------------------------------------------

/// Exports of the real winscard.dll we do not implement. On x86-64 (and
/// arm64) the caller passes arguments in registers and cleans up itself,
/// so a function that ignores its arguments is a valid stand-in for any
/// signature returning LONG.
macro_rules! unsupported {
    ($($name:ident),* $(,)?) => {$(
        #[no_mangle]
        pub extern "system" fn $name() -> LONG {
            run(stringify!($name), || Err(ScardError::UnsupportedFeature))
        }
    )*};
}

unsupported!(
    SCardSetAttrib,
    SCardGetTransmitCount,
    SCardListInterfacesA,
    SCardListInterfacesW,
    SCardGetProviderIdA,
    SCardGetProviderIdW,
    SCardIntroduceReaderGroupA,
    SCardIntroduceReaderGroupW,
    SCardForgetReaderGroupA,
    SCardForgetReaderGroupW,
    SCardIntroduceReaderA,
    SCardIntroduceReaderW,
    SCardForgetReaderA,
    SCardForgetReaderW,
    SCardAddReaderToGroupA,
    SCardAddReaderToGroupW,
    SCardRemoveReaderFromGroupA,
    SCardRemoveReaderFromGroupW,
    SCardIntroduceCardTypeA,
    SCardIntroduceCardTypeW,
    SCardSetCardTypeProviderNameA,
    SCardSetCardTypeProviderNameW,
    SCardForgetCardTypeA,
    SCardForgetCardTypeW,
    SCardLocateCardsA,
    SCardLocateCardsW,
    SCardLocateCardsByATRA,
    SCardLocateCardsByATRW,
    SCardGetReaderIconA,
    SCardGetReaderIconW,
    SCardGetReaderDeviceInstanceIdA,
    SCardGetReaderDeviceInstanceIdW,
    SCardListReadersWithDeviceInstanceIdA,
    SCardListReadersWithDeviceInstanceIdW,
    SCardState,
);
