//! Transport (ISO 7816-4 5.1.1, 7.1.3): command chaining, response
//! limiting to Le and GET RESPONSE for the rest.

use zeroize::Zeroizing;

use super::command::check_cla;
use super::Card;
use crate::apdu::{Command, Response};
use crate::enums::{Ins, StatusWord};
use crate::refusal::Refusal;

/// Largest command a chain may assemble; beyond it the chain is refused
/// with 6A84 rather than growing without bound.
pub const MAX_CHAINED_COMMAND: usize = 64 * 1024;

/// INS, P1, P2 and protection that every chunk of one command chain
/// repeats.
type ChainHeader = (Ins, u8, u8, bool);

/// A command chain being received: its header, the data so far, and
/// whether the PIN was verified just before the chain began.
pub(super) struct Chain {
    header: ChainHeader,
    data: Zeroizing<Vec<u8>>,
    pin_just_verified: bool,
}

/// A request after transport processing: chaining undone, CLA checked,
/// secure messaging removed.
pub(super) struct Req<'a> {
    pub ins: Ins,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    /// The command before this one was a successful VERIFY.
    pub pin_just_verified: bool,
    /// The command came secure-messaging protected.
    pub secure: bool,
}

impl Card {
    pub(super) fn transport(&mut self, apdu: &[u8]) -> Response {
        // Whatever this APDU is, it is not VERIFY's successor any more
        // unless it continues the chain that was.
        let pin_just_verified = std::mem::take(&mut self.session.pin_fresh);
        let cmd = match Command::parse(apdu) {
            Ok(c) => c,
            Err(_) => {
                self.session.chain = None;
                self.session.pending = None;
                return Refusal::BadLength.into();
            }
        };
        let secure = match check_cla(cmd.cla, self.state.secure_messaging.is_some()) {
            Ok(secure) => secure,
            Err(sw) => {
                self.session.chain = None;
                self.session.pending = None;
                return sw.into();
            }
        };
        if cmd.ins == Ins::GetResponse && !secure {
            return self.get_response(&cmd);
        }
        self.session.pending = None;
        let header = (cmd.ins, cmd.p1, cmd.p2, secure);
        let continued = match self.session.chain.take() {
            Some(c) if c.header == header => Some(c),
            _ => None,
        };
        if cmd.is_chained() {
            let mut chain = continued.unwrap_or(Chain {
                header,
                data: Zeroizing::new(Vec::new()),
                pin_just_verified,
            });
            if chain.data.len() + cmd.data.len() > MAX_CHAINED_COMMAND {
                return Refusal::ChainTooLong.into();
            }
            extend_wiped(&mut chain.data, cmd.data);
            self.session.chain = Some(chain);
            return Response::ok(Vec::new());
        }
        let joined;
        let (data, pin_just_verified) = match continued {
            Some(mut chain) => {
                if chain.data.len() + cmd.data.len() > MAX_CHAINED_COMMAND {
                    return Refusal::ChainTooLong.into();
                }
                extend_wiped(&mut chain.data, cmd.data);
                joined = chain;
                (&joined.data[..], joined.pin_just_verified)
            }
            None => (cmd.data, pin_just_verified),
        };
        let limit = cmd.le.unwrap_or(if cmd.extended { 65536 } else { 256 });
        if secure {
            let resp = self.secure_exchange(cmd.ins, cmd.p1, cmd.p2, data, pin_just_verified);
            return self.limit_response(resp, limit);
        }
        let req = Req {
            ins: cmd.ins,
            p1: cmd.p1,
            p2: cmd.p2,
            data,
            pin_just_verified,
            secure: false,
        };
        let resp = self.dispatch(&req).unwrap_or_else(Response::from);
        self.limit_response(resp, limit)
    }

    /// A secure-messaging protected command: its MAC checked and its data
    /// decrypted, then dispatched as any command, and its answer (data and
    /// status word) protected into a response that ends 9000. A command
    /// that fails the check ends the session and is answered in the clear.
    fn secure_exchange(
        &mut self,
        ins: Ins,
        p1: u8,
        p2: u8,
        data: &[u8],
        pin_just_verified: bool,
    ) -> Response {
        // The session leaves the card while the command runs, so that a
        // command that ends the session (SELECT, a wrong pairing code)
        // cannot leave a half-used one behind.
        let Some(mut channel) = self.session.sm.take() else {
            return Refusal::SecurityStatus.into();
        };
        let opened = match channel.open_command(ins.into(), p1, p2, data) {
            Ok(opened) => opened,
            Err(e) => {
                self.end_secure_session();
                return e.refusal().into();
            }
        };
        let req = Req {
            ins,
            p1,
            p2,
            data: &opened.data,
            pin_just_verified,
            secure: true,
        };
        self.session.sm_ends = false;
        let resp = self.dispatch(&req).unwrap_or_else(Response::from);
        let protected = channel.protect_response(&resp.data, resp.sw.into());
        if std::mem::take(&mut self.session.sm_ends) || ins == Ins::Select {
            self.end_secure_session();
        } else {
            self.session.sm = Some(channel);
        }
        Response::ok(protected)
    }

    /// Returns at most `limit` bytes and keeps the rest for GET RESPONSE.
    fn limit_response(&mut self, mut resp: Response, limit: usize) -> Response {
        if resp.data.len() <= limit {
            return resp;
        }
        let rest = Zeroizing::new(resp.data.split_off(limit));
        let left = rest.len();
        self.session.pending = Some(rest);
        resp.sw = StatusWord::MoreData(if left >= 256 { 0 } else { left as u8 });
        resp
    }

    fn get_response(&mut self, cmd: &Command<'_>) -> Response {
        self.session.chain = None;
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return Refusal::BadP1P2.into();
        }
        let Some(pending) = self.session.pending.take() else {
            return Refusal::OutOfOrder.into();
        };
        let limit = cmd.le.unwrap_or(256);
        self.limit_response(Response::ok(pending.to_vec()), limit)
    }
}

/// Appends to a buffer that may hold secrets (a chained PIN, an imported
/// key) without leaving a copy behind: when the buffer must grow, its
/// contents move to a larger one and the old one is wiped as it drops,
/// where `Vec`'s own growth would free it unwiped.
fn extend_wiped(buf: &mut Zeroizing<Vec<u8>>, more: &[u8]) {
    let needed = buf.len() + more.len();
    if needed > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(2 * buf.capacity())));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(more);
}
