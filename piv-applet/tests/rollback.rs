//! A save that fails leaves memory equal to the card file: for every
//! command and provisioning call that changes the card, with the store
//! failing at its first, second, ... save, the state in memory is byte for
//! byte the last state saved, and the host is told (6581 or an error).

mod common;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{hex, Host, DEFAULT_MGMT};
use piv_applet::keys::KeyMaterial;
use piv_applet::state::CardState;
use piv_applet::store::{self, Store, StoreError};
use piv_applet::{AlgorithmId, Card, CardOptions, PinPolicy, Slot, StatusWord, TouchPolicy};

/// A store that allows `budget` more saves and fails after that (negative:
/// no limit), keeping the bytes of the last successful save.
#[derive(Clone)]
struct FlakyStore {
    budget: Arc<AtomicIsize>,
    saved: Arc<Mutex<Vec<u8>>>,
}

impl Store for FlakyStore {
    fn save(&mut self, state: &CardState) -> Result<(), StoreError> {
        if self.budget.load(Ordering::SeqCst) == 0 {
            return Err(StoreError::Io {
                path: "<flaky>".into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        self.budget.fetch_sub(1, Ordering::SeqCst);
        *self.saved.lock().unwrap() = store::to_bytes(state).to_vec();
        Ok(())
    }

    fn path(&self) -> Option<&std::path::Path> {
        None
    }
}

struct Rig {
    host: Host,
    store: FlakyStore,
}

impl Rig {
    fn new() -> Rig {
        let state = Card::new_state(&CardOptions {
            serial: Some(99),
            ..CardOptions::default()
        })
        .unwrap();
        let store = FlakyStore {
            budget: Arc::new(AtomicIsize::new(-1)),
            saved: Arc::new(Mutex::new(store::to_bytes(&state).to_vec())),
        };
        let card = Card::with_store(state, Box::new(store.clone()));
        Rig {
            host: Host { card },
            store,
        }
    }

    fn memory(&self) -> Vec<u8> {
        store::to_bytes(self.host.card.state()).to_vec()
    }

    fn on_disk(&self) -> Vec<u8> {
        self.store.saved.lock().unwrap().clone()
    }

    /// Runs `op` with 0, 1, 2, ... saves allowed until it succeeds; after
    /// each failed run memory must equal the last save, and with no save
    /// allowed the op must fail. Returns the number of saves it needed.
    fn check(&mut self, what: &str, op: &dyn Fn(&mut Host) -> bool) -> isize {
        for budget in 0..8 {
            self.store.budget.store(budget, Ordering::SeqCst);
            let ok = op(&mut self.host);
            self.store.budget.store(-1, Ordering::SeqCst);
            assert!(
                self.memory() == self.on_disk(),
                "{what}: with {budget} save(s) allowed, memory differs from the card file"
            );
            if ok {
                assert!(budget > 0, "{what}: succeeded without saving");
                return budget;
            }
        }
        panic!("{what}: never succeeded");
    }
}

fn sw(host: &mut Host, apdu: &str) -> StatusWord {
    host.raw(&hex(apdu)).sw
}

fn pin_block(pin: &[u8]) -> Vec<u8> {
    let mut b = pin.to_vec();
    b.resize(8, 0xFF);
    b
}

#[test]
fn failed_saves_through_apdus_leave_memory_equal_to_the_file() {
    let mut rig = Rig::new();
    rig.host.auth_default();
    rig.host.generate(0x9A, AlgorithmId::EccP256, &[]);
    assert_eq!(rig.host.verify_pin(b"123456"), StatusWord::Success);

    rig.check("PUT DATA", &|h| {
        h.put_data(&[0x5F, 0xC1, 0x09], &hex("99 03 414243")) == StatusWord::Success
    });
    rig.check("PUT DATA (delete)", &|h| {
        h.put_data(&[0x5F, 0xC1, 0x09], &[]) == StatusWord::Success
    });
    rig.check("GENERATE", &|h| {
        let data = piv_applet::tlv::encode(0xAC, &[0x80, 1, AlgorithmId::EccP256.into()]);
        h.send(0x47, 0, 0x9C, &data).sw == StatusWord::Success
    });
    let import = KeyMaterial::generate(AlgorithmId::EccP256)
        .unwrap()
        .to_import_tlvs();
    rig.check("IMPORT KEY", &|h| {
        h.send(0xFE, AlgorithmId::EccP256.into(), 0x9D, &import).sw == StatusWord::Success
    });
    rig.check("MOVE KEY", &|h| sw(h, "00F6829D") == StatusWord::Success);
    rig.check("DELETE KEY", &|h| sw(h, "00F6FF82") == StatusWord::Success);
    rig.check("SET MANAGEMENT KEY", &|h| {
        let mut data = vec![AlgorithmId::Aes192.into(), 0x9B, 24];
        data.extend_from_slice(&DEFAULT_MGMT);
        h.send(0xFF, 0xFF, 0xFF, &data).sw == StatusWord::Success
    });
    // VERIFY: the wrong try is counted by its own save; a right one needs
    // two saves (count, then reset the counter).
    assert_eq!(
        rig.check("VERIFY (wrong)", &|h| {
            h.verify_pin(b"654321") == StatusWord::VerifyFail(2)
        }),
        1
    );
    assert_eq!(
        rig.check("VERIFY (right)", &|h| {
            h.verify_pin(b"123456") == StatusWord::Success
        }),
        2
    );
    let change = [pin_block(b"123456"), pin_block(b"2468013")].concat();
    rig.check("CHANGE REFERENCE DATA", &|h| {
        h.send(0x24, 0, 0x80, &change).sw == StatusWord::Success
    });
    let reset = [pin_block(b"12345678"), pin_block(b"123456")].concat();
    rig.check("RESET RETRY COUNTER", &|h| {
        h.send(0x2C, 0, 0x80, &reset).sw == StatusWord::Success
    });
    assert_eq!(rig.host.verify_pin(b"123456"), StatusWord::Success);
    rig.check("SET PIN RETRIES", &|h| {
        sw(h, "00FA0505") == StatusWord::Success
    });
    // YubiKey RESET needs PIN and PUK blocked.
    for _ in 0..5 {
        rig.host.verify_pin(b"000000");
        rig.host.send(
            0x2C,
            0,
            0x80,
            &[pin_block(b"00000000"), pin_block(b"123456")].concat(),
        );
    }
    rig.check("RESET", &|h| sw(h, "00FB0000") == StatusWord::Success);
    assert!(rig
        .host
        .card
        .state()
        .keys
        .keys()
        .all(|s| *s == Slot::ATTESTATION));
}

#[test]
fn failed_saves_through_the_provisioning_api_leave_memory_equal_to_the_file() {
    let mut rig = Rig::new();
    let cert = {
        let mut card = Card::ephemeral(&CardOptions::default()).unwrap();
        card.generate_key(
            Slot::AUTHENTICATION,
            AlgorithmId::EccP256,
            PinPolicy::Default,
            TouchPolicy::Default,
        )
        .unwrap();
        card.self_sign(
            Slot::AUTHENTICATION,
            &piv_applet::x509::CertRequest {
                subject: "CN=rollback",
                serial: &[1],
                not_before: piv_applet::x509::valid_from_now(),
                days: 1,
                extensions: vec![],
            },
        )
        .unwrap()
    };
    let generate = |h: &mut Host| {
        h.card
            .generate_key(
                Slot::SIGNATURE,
                AlgorithmId::Ed25519,
                PinPolicy::Once,
                TouchPolicy::Never,
            )
            .is_ok()
    };
    rig.check("generate_key", &generate);
    rig.check("put_certificate", &|h| {
        h.card.put_certificate(Slot::SIGNATURE, &cert).is_ok()
    });
    rig.check("import_key_and_certificate", &|h| {
        let key = KeyMaterial::generate(AlgorithmId::EccP384).unwrap();
        h.card
            .import_key_and_certificate(
                Slot::KEY_MANAGEMENT,
                key,
                Some(&cert),
                PinPolicy::Default,
                TouchPolicy::Default,
            )
            .is_ok()
    });
    rig.check("set_pin", &|h| h.card.set_pin(b"97531246").is_ok());
    rig.check("set_puk", &|h| h.card.set_puk(b"11223344").is_ok());
    rig.check("set_management_key", &|h| {
        let key = piv_applet::mgmt::ManagementKey::new(AlgorithmId::Aes128, &[7u8; 16]).unwrap();
        h.card.set_management_key(key).is_ok()
    });
}
