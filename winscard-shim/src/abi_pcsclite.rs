//! The pcsc-lite ABI (`libpcsclite.so.1`): DWORD and LONG are C `long`,
//! SCARD_READERSTATE carries a 33-byte ATR, no A/W variants. Types come
//! from pcsc-sys; every function is a thin translation onto the core.
#![allow(non_snake_case, non_upper_case_globals, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void};

use pcsc_sys::{DWORD, LONG, SCARDCONTEXT, SCARDHANDLE, SCARD_IO_REQUEST, SCARD_READERSTATE};

use crate::abi_util::{self as u, guard};
use crate::consts;
use crate::error::{ScardError, ScardResult};
use crate::shim::{self, CardState, Control, Disposition, ReaderStateIo, Share};

const PCI_LEN: DWORD = std::mem::size_of::<SCARD_IO_REQUEST>() as DWORD;

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
    dwProtocol: 4,
    cbPciLength: PCI_LEN,
};

/// pcsc-lite's CM_IOCTL_GET_FEATURE_REQUEST = SCARD_CTL_CODE(3400).
const GET_FEATURE_REQUEST: DWORD = 0x4200_0000 + 3400;
/// pcsc-lite SCardStatus state bits: SCARD_PRESENT | SCARD_POWERED | SCARD_NEGOTIABLE.
const STATE_PRESENT_POWERED: DWORD = 0x0004 | 0x0010 | 0x0020;
const STATE_ABSENT: DWORD = 0x0002;

fn code(r: ScardResult<()>) -> LONG {
    match r {
        Ok(()) => 0,
        Err(e) => e.pcsclite_code() as LONG,
    }
}

fn run(name: &'static str, f: impl FnOnce() -> ScardResult<()>) -> LONG {
    code(guard(name, f))
}

fn id(h: LONG) -> u64 {
    h as u64
}

#[no_mangle]
pub unsafe extern "C" fn SCardEstablishContext(
    dwScope: DWORD,
    _pvReserved1: *const c_void,
    _pvReserved2: *const c_void,
    phContext: *mut SCARDCONTEXT,
) -> LONG {
    run("SCardEstablishContext", || {
        if phContext.is_null() {
            return Err(ScardError::InvalidParameter);
        }
        let ctx = crate::global()?.establish_context(dwScope as u32)?;
        *phContext = ctx as SCARDCONTEXT;
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn SCardReleaseContext(hContext: SCARDCONTEXT) -> LONG {
    run("SCardReleaseContext", || {
        crate::global()?.release_context(id(hContext))
    })
}

#[no_mangle]
pub extern "C" fn SCardIsValidContext(hContext: SCARDCONTEXT) -> LONG {
    run("SCardIsValidContext", || {
        crate::global()?.is_valid_context(id(hContext))
    })
}

#[no_mangle]
pub extern "C" fn SCardCancel(hContext: SCARDCONTEXT) -> LONG {
    run("SCardCancel", || crate::global()?.cancel(id(hContext)))
}

#[no_mangle]
pub unsafe extern "C" fn SCardListReaders(
    hContext: SCARDCONTEXT,
    mszGroups: *const c_char,
    mszReaders: *mut c_char,
    pcchReaders: *mut DWORD,
) -> LONG {
    run("SCardListReaders", || {
        let groups = u::multi_cstr(mszGroups.cast());
        let names = crate::global()?.list_readers(Some(id(hContext)), groups.as_deref())?;
        u::write_out(
            &u::multi_a(&names),
            mszReaders.cast::<u8>(),
            pcchReaders,
            true,
        )
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardListReaderGroups(
    hContext: SCARDCONTEXT,
    mszGroups: *mut c_char,
    pcchGroups: *mut DWORD,
) -> LONG {
    run("SCardListReaderGroups", || {
        let groups = crate::global()?.list_reader_groups(Some(id(hContext)))?;
        u::write_out(
            &u::multi_a(&groups),
            mszGroups.cast::<u8>(),
            pcchGroups,
            true,
        )
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardFreeMemory(_hContext: SCARDCONTEXT, pvMem: *const c_void) -> LONG {
    run("SCardFreeMemory", || {
        // NULL is a no-op, as pcsc-lite's free(NULL).
        if pvMem.is_null() || u::free(pvMem) {
            Ok(())
        } else {
            Err(ScardError::InvalidParameter)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardGetStatusChange(
    hContext: SCARDCONTEXT,
    dwTimeout: DWORD,
    rgReaderStates: *mut SCARD_READERSTATE,
    cReaders: DWORD,
) -> LONG {
    run("SCardGetStatusChange", || {
        let shim = crate::global()?;
        if cReaders == 0 {
            return shim.is_valid_context(id(hContext));
        }
        // A count no array can have would be undefined behaviour in
        // from_raw_parts_mut (an abort in debug builds).
        if rgReaderStates.is_null() {
            return Err(ScardError::InvalidParameter);
        }
        let n = u::slice_len::<SCARD_READERSTATE>(cReaders as usize, usize::MAX)
            .ok_or(ScardError::InvalidParameter)?;
        let rs = std::slice::from_raw_parts_mut(rgReaderStates, n);
        let mut io = Vec::with_capacity(rs.len());
        for r in rs.iter() {
            let name = u::cstr(r.szReader.cast()).ok_or(ScardError::InvalidValue)?;
            io.push(ReaderStateIo {
                name,
                current: r.dwCurrentState as u32,
                ..Default::default()
            });
        }
        // Only ignored entries: nothing to wait for (pcsc-lite answers at once).
        if io.iter().all(|s| s.current & consts::state::IGNORE != 0) {
            return shim.is_valid_context(id(hContext));
        }
        let timeout = if dwTimeout as u32 == u32::MAX || dwTimeout > u32::MAX as DWORD {
            u32::MAX
        } else {
            dwTimeout as u32
        };
        let res = shim.get_status_change(id(hContext), timeout, &mut io);
        if matches!(res, Ok(()) | Err(ScardError::Timeout)) {
            for (r, s) in rs.iter_mut().zip(&io) {
                r.dwEventState = s.event as DWORD;
                let n = s.atr.len().min(r.rgbAtr.len());
                r.rgbAtr[..n].copy_from_slice(&s.atr[..n]);
                r.cbAtr = n as DWORD;
            }
        }
        res
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardConnect(
    hContext: SCARDCONTEXT,
    szReader: *const c_char,
    dwShareMode: DWORD,
    dwPreferredProtocols: DWORD,
    phCard: *mut SCARDHANDLE,
    pdwActiveProtocol: *mut DWORD,
) -> LONG {
    run("SCardConnect", || {
        let reader = u::cstr(szReader.cast()).ok_or(ScardError::InvalidParameter)?;
        if phCard.is_null() || pdwActiveProtocol.is_null() {
            return Err(ScardError::InvalidParameter);
        }
        let share = Share::from_u32(dwShareMode as u32)?;
        let (h, p) =
            crate::global()?.connect(id(hContext), &reader, share, dwPreferredProtocols as u32)?;
        *phCard = h as SCARDHANDLE;
        *pdwActiveProtocol = p as DWORD;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardReconnect(
    hCard: SCARDHANDLE,
    dwShareMode: DWORD,
    dwPreferredProtocols: DWORD,
    dwInitialization: DWORD,
    pdwActiveProtocol: *mut DWORD,
) -> LONG {
    run("SCardReconnect", || {
        if pdwActiveProtocol.is_null() {
            return Err(ScardError::InvalidParameter);
        }
        let share = Share::from_u32(dwShareMode as u32)?;
        let init = Disposition::from_u32(dwInitialization as u32)?;
        let p = crate::global()?.reconnect(id(hCard), share, dwPreferredProtocols as u32, init)?;
        *pdwActiveProtocol = p as DWORD;
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn SCardDisconnect(hCard: SCARDHANDLE, dwDisposition: DWORD) -> LONG {
    run("SCardDisconnect", || {
        let d = Disposition::from_u32(dwDisposition as u32)?;
        crate::global()?.disconnect(id(hCard), d)
    })
}

#[no_mangle]
pub extern "C" fn SCardBeginTransaction(hCard: SCARDHANDLE) -> LONG {
    run("SCardBeginTransaction", || {
        crate::global()?.begin_transaction(id(hCard))
    })
}

#[no_mangle]
pub extern "C" fn SCardEndTransaction(hCard: SCARDHANDLE, dwDisposition: DWORD) -> LONG {
    run("SCardEndTransaction", || {
        let d = Disposition::from_u32(dwDisposition as u32)?;
        crate::global()?.end_transaction(id(hCard), d)
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardStatus(
    hCard: SCARDHANDLE,
    szReaderName: *mut c_char,
    pcchReaderLen: *mut DWORD,
    pdwState: *mut DWORD,
    pdwProtocol: *mut DWORD,
    pbAtr: *mut u8,
    pcbAtrLen: *mut DWORD,
) -> LONG {
    run("SCardStatus", || {
        let st = crate::global()?.status(id(hCard))?;
        u::put(
            pdwState,
            if st.state == CardState::Specific {
                STATE_PRESENT_POWERED
            } else {
                STATE_ABSENT
            },
        );
        u::put(pdwProtocol, st.protocol as DWORD);
        if !pcchReaderLen.is_null() {
            u::write_out(
                &u::one_a(&st.reader),
                szReaderName.cast::<u8>(),
                pcchReaderLen,
                true,
            )?;
        }
        if !pcbAtrLen.is_null() {
            u::write_out(&st.atr, pbAtr, pcbAtrLen, true)?;
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardTransmit(
    hCard: SCARDHANDLE,
    pioSendPci: *const SCARD_IO_REQUEST,
    pbSendBuffer: *const u8,
    cbSendLength: DWORD,
    pioRecvPci: *mut SCARD_IO_REQUEST,
    pbRecvBuffer: *mut u8,
    pcbRecvLength: *mut DWORD,
) -> LONG {
    run("SCardTransmit", || {
        if pbSendBuffer.is_null()
            || pbRecvBuffer.is_null()
            || pcbRecvLength.is_null()
            || pioSendPci.is_null()
        {
            return Err(ScardError::InvalidParameter);
        }
        // Checked before the slice exists: a length past any APDU (say
        // (DWORD)-1) would be undefined behaviour in from_raw_parts.
        let n = u::slice_len::<u8>(cbSendLength as usize, consts::MAX_APDU)
            .ok_or(ScardError::InvalidParameter)?;
        let apdu = std::slice::from_raw_parts(pbSendBuffer, n);
        let proto = (*pioSendPci).dwProtocol as u32;
        let resp = crate::global()?.transmit(id(hCard), Some(proto), apdu)?;
        if !pioRecvPci.is_null() {
            (*pioRecvPci).dwProtocol = shim::protocol::T1 as DWORD;
            (*pioRecvPci).cbPciLength = PCI_LEN;
        }
        u::write_out(&resp, pbRecvBuffer, pcbRecvLength, false)
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardControl(
    hCard: SCARDHANDLE,
    dwControlCode: DWORD,
    pbSendBuffer: *const c_void,
    cbSendLength: DWORD,
    pbRecvBuffer: *mut c_void,
    cbRecvLength: DWORD,
    lpBytesReturned: *mut DWORD,
) -> LONG {
    run("SCardControl", || {
        let input = if pbSendBuffer.is_null() {
            &[][..]
        } else {
            // pcsc-lite's code for a send length past MAX_BUFFER_SIZE_EXTENDED.
            let n = u::slice_len::<u8>(cbSendLength as usize, consts::MAX_APDU)
                .ok_or(ScardError::InsufficientBuffer)?;
            std::slice::from_raw_parts(pbSendBuffer.cast::<u8>(), n)
        };
        let c = if dwControlCode == GET_FEATURE_REQUEST {
            Control::GetFeatureRequest
        } else {
            Control::Other(dwControlCode as u32)
        };
        let out = crate::global()?.control(id(hCard), c, input)?;
        // lpBytesReturned is optional in pcsc-lite.
        u::copy_fixed(
            &out,
            pbRecvBuffer.cast::<u8>(),
            cbRecvLength as usize,
            lpBytesReturned,
        )
    })
}

#[no_mangle]
pub unsafe extern "C" fn SCardGetAttrib(
    hCard: SCARDHANDLE,
    dwAttrId: DWORD,
    pbAttr: *mut u8,
    pcbAttrLen: *mut DWORD,
) -> LONG {
    run("SCardGetAttrib", || {
        let v = crate::global()?.get_attrib(id(hCard), dwAttrId as u32)?;
        u::write_out(&v, pbAttr, pcbAttrLen, true)
    })
}

#[no_mangle]
pub extern "C" fn SCardSetAttrib(
    hCard: SCARDHANDLE,
    _dwAttrId: DWORD,
    pbAttr: *const u8,
    cbAttrLen: DWORD,
) -> LONG {
    run("SCardSetAttrib", || {
        if pbAttr.is_null() || cbAttrLen == 0 {
            return Err(ScardError::InvalidParameter);
        }
        crate::global()?.status(id(hCard)).map(|_| ())?;
        Err(ScardError::UnsupportedFeature)
    })
}

/// Texts for every code, NUL-terminated and static.
#[no_mangle]
pub extern "C" fn pcsc_stringify_error(pcscError: LONG) -> *const c_char {
    let text = if pcscError == 0 {
        "Command successful.\0"
    } else {
        u32::try_from(pcscError)
            .ok()
            .and_then(ScardError::from_pcsclite_code)
            .map_or("Unknown error.\0", ScardError::text_nul)
    };
    text.as_ptr().cast()
}
