//! Where a reader's card lives: in this process (the piv-applet) or behind
//! `vreader --listen` (the vpcd protocol, reader side).

use piv_applet::Card;

/// A card slot as the reader sees it. Errors mean the card is gone (for a
/// remote card: the connection dropped); the reader then reports it removed.
pub trait Backend: Send {
    /// Makes sure a card is there and powered; returns its ATR.
    fn power_on(&mut self) -> Result<Vec<u8>, String>;
    /// Cuts power (the next power_on is a cold reset).
    fn power_off(&mut self);
    /// Warm reset; returns the ATR.
    fn reset(&mut self) -> Result<Vec<u8>, String>;
    /// One command APDU in, response data + SW out.
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String>;
    /// Whether a card is (still) there, without side effects on the card.
    /// A remote backend may try to (re)connect here.
    fn poll_present(&mut self) -> bool;
    /// Whether `poll_present` can change on its own (readers that can, get
    /// polled while a caller waits in SCardGetStatusChange).
    fn can_change(&self) -> bool;
    /// For logs.
    fn describe(&self) -> String;
}

/// The piv-applet running in this process.
pub struct Embedded {
    card: Card,
    what: String,
}

impl Embedded {
    pub fn new(card: Card, what: String) -> Embedded {
        Embedded { card, what }
    }
}

impl Backend for Embedded {
    fn power_on(&mut self) -> Result<Vec<u8>, String> {
        self.card.power_on();
        Ok(self.card.atr())
    }

    fn power_off(&mut self) {
        self.card.power_off();
    }

    fn reset(&mut self) -> Result<Vec<u8>, String> {
        self.card.reset();
        Ok(self.card.atr())
    }

    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self.card.process(apdu))
    }

    fn poll_present(&mut self) -> bool {
        true
    }

    fn can_change(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}
