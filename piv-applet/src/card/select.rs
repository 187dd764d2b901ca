//! SELECT (ISO 7816-4 11.1.1): the PIV application or the YubiKey
//! Management application, and the answer each gives.

use super::command::{parse_select, Applet};
use super::{Card, Res, Session};
use crate::apdu::Response;
use crate::device;
use crate::enums::{AlgorithmId, PIV_AID, PIV_RID_LEN};
use crate::refusal::Refusal;
use crate::sm::CipherSuite;
use crate::tlv;

impl Card {
    pub(super) fn select(&mut self, p1: u8, aid: &[u8]) -> Res {
        let Some(applet) = parse_select(p1, aid)? else {
            self.session = Session::default();
            return Err(Refusal::NoApplication);
        };
        // Selecting another application ends the PIV session (PIN,
        // management key); selecting PIV again keeps it.
        if self.session.selected != Some(applet) {
            self.session = Session::default();
        }
        // SELECT ends a secure messaging session in any case (SP 800-73-4
        // part 2, 4.3: its keys live until the application is selected
        // again); the host establishes a new one.
        self.end_secure_session();
        self.session.selected = Some(applet);
        let suite = self.state.secure_messaging.as_ref().map(|sm| sm.suite());
        Ok(Response::ok(match applet {
            Applet::Piv => application_property_template(suite),
            Applet::Management => device::select_answer(&self.state.identity),
        }))
    }
}

/// The SELECT answer: application property template with the PIX and
/// version, the coexistent tag allocation authority, and the algorithms
/// the card supports (SP 800-73-4 part 2, table 3), among them the secure
/// messaging cipher suite when the card offers one (how OpenSC learns
/// that it may establish a session).
pub fn application_property_template(sm: Option<CipherSuite>) -> Vec<u8> {
    let mut inner = Vec::new();
    tlv::write(&mut inner, 0x4F, &PIV_AID[PIV_RID_LEN..]);
    tlv::write(
        &mut inner,
        0x79,
        &tlv::encode(0x4F, &PIV_AID[..PIV_RID_LEN]),
    );
    let mut algs = Vec::new();
    for alg in AlgorithmId::ASYMMETRIC
        .into_iter()
        .chain(AlgorithmId::SYMMETRIC)
    {
        tlv::write(&mut algs, 0x80, &[alg.into()]);
    }
    if let Some(suite) = sm {
        tlv::write(&mut algs, 0x80, &[suite.algorithm()]);
    }
    tlv::write(&mut algs, 0x06, &[]);
    tlv::write(&mut inner, 0xAC, &algs);
    tlv::encode(0x61, &inner)
}
