//! The PC/SC resource manager in plain Rust: contexts, readers, card
//! handles, sharing, transactions, status changes and the card cache.
//! Both ABI layers are thin translations onto [`Shim`].
//!
//! Lock order: a reader's lock may be held while taking the handle table
//! lock, never the other way round; the epoch lock is a leaf.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use piv_applet::Redactor;

use crate::backend::Backend;
use crate::cache::{self, CacheItem, CacheOptions, Freshness};
use crate::consts::{self, state};
use crate::error::{ScardError, ScardResult};

/// Protocol bits as the core counts them (the ABI maps RAW).
pub mod protocol {
    pub const UNDEFINED: u32 = 0;
    pub const T0: u32 = 1;
    pub const T1: u32 = 2;
    pub const RAW: u32 = 4;
}

/// `dwShareMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    Exclusive,
    Shared,
    Direct,
}

impl Share {
    pub fn from_u32(v: u32) -> ScardResult<Share> {
        match v {
            1 => Ok(Share::Exclusive),
            2 => Ok(Share::Shared),
            3 => Ok(Share::Direct),
            _ => Err(ScardError::InvalidValue),
        }
    }
}

/// `dwDisposition` / `dwInitialization`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Leave,
    Reset,
    Unpower,
    Eject,
}

impl Disposition {
    pub fn from_u32(v: u32) -> ScardResult<Disposition> {
        match v {
            0 => Ok(Disposition::Leave),
            1 => Ok(Disposition::Reset),
            2 => Ok(Disposition::Unpower),
            3 => Ok(Disposition::Eject),
            _ => Err(ScardError::InvalidValue),
        }
    }
}

/// Card state for `SCardStatus` (each ABI encodes it its own way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardState {
    Absent,
    Specific,
}

/// `SCardControl` requests the core understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// CM_IOCTL_GET_FEATURE_REQUEST (PC/SC part 10): we have no pinpad.
    GetFeatureRequest,
    Other(u32),
}

/// One entry of SCardGetStatusChange's array, ABI-neutral.
#[derive(Clone, Debug, Default)]
pub struct ReaderStateIo {
    pub name: String,
    pub current: u32,
    pub event: u32,
    pub atr: Vec<u8>,
}

/// `SCardStatus` result.
#[derive(Clone, Debug)]
pub struct Status {
    pub reader: String,
    pub state: CardState,
    pub protocol: u32,
    pub atr: Vec<u8>,
}

struct BuiltCache {
    guid: [u8; 16],
    items: Vec<CacheItem>,
}

struct ReaderInner {
    backend: Box<dyn Backend>,
    present: bool,
    atr: Vec<u8>,
    /// HIWORD of dwEventState: insertions and removals seen.
    events: u16,
    /// Bumped when the card is removed; handles from an older insertion get
    /// SCARD_W_REMOVED_CARD.
    insertion: u64,
    /// Bumped on every reset or power cycle; older handles get
    /// SCARD_W_RESET_CARD until they reconnect.
    generation: u64,
    handles: HashSet<u64>,
    exclusive: Option<u64>,
    transaction: Option<(u64, u32)>,
    cache: Option<BuiltCache>,
    /// CHUID GUIDs of cards removed since the cache last looked: what
    /// msclmd wrote for them dies with them.
    removed_guids: Vec<[u8; 16]>,
    redactor: Redactor,
}

/// One virtual reader with its card.
pub struct Reader {
    pub name: String,
    inner: Mutex<ReaderInner>,
    transaction_free: Condvar,
}

#[derive(Clone, Copy)]
struct HandleState {
    context: u64,
    reader: usize,
    share: Share,
    protocol: u32,
    insertion: u64,
    generation: u64,
}

#[derive(Default)]
struct ContextState {
    cancels: u64,
}

#[derive(Default)]
struct Tables {
    next: u64,
    contexts: HashMap<u64, ContextState>,
    handles: HashMap<u64, HandleState>,
}

struct Written {
    freshness: u32,
    data: Vec<u8>,
}

/// Largest item SCardWriteCache accepts.
pub const MAX_CACHE_ITEM: usize = 64 * 1024;

/// The whole resource manager.
pub struct Shim {
    readers: Vec<Reader>,
    tables: Mutex<Tables>,
    epoch: Mutex<u64>,
    changed: Condvar,
    written: Mutex<HashMap<([u8; 16], String), Written>>,
    cache_opts: CacheOptions,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is already reported as
    // SCARD_F_INTERNAL_ERROR; the state itself stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReaderInner {
    fn event_state(&self) -> u32 {
        let mut s = if self.present {
            state::PRESENT
        } else {
            state::EMPTY
        };
        if self.present && !self.handles.is_empty() {
            s |= state::INUSE;
        }
        if self.exclusive.is_some() {
            s |= state::EXCLUSIVE;
        }
        s | (u32::from(self.events) << 16)
    }

    fn mark_removed(&mut self, why: &str, reader: &str) {
        if self.present {
            tracing::info!("{reader}: card removed ({why})");
            self.present = false;
            self.events = self.events.wrapping_add(1);
            self.insertion += 1;
            self.generation += 1;
            self.atr.clear();
            if let Some(c) = self.cache.take() {
                self.removed_guids.push(c.guid);
            }
            self.transaction = None;
        }
    }

    /// Polls the backend; returns whether the state changed.
    fn refresh(&mut self, reader: &str) -> bool {
        let now = self.backend.poll_present();
        if now == self.present {
            return false;
        }
        if now {
            match self.backend.power_on() {
                Ok(atr) => {
                    tracing::info!("{reader}: card inserted, ATR {}", hex::encode_upper(&atr));
                    self.present = true;
                    self.atr = atr;
                    self.events = self.events.wrapping_add(1);
                    self.generation += 1;
                    self.cache = None;
                    self.redactor = Redactor::default();
                    true
                }
                Err(e) => {
                    tracing::warn!("{reader}: card did not power on: {e}");
                    false
                }
            }
        } else {
            self.mark_removed("backend reports no card", reader);
            true
        }
    }

    fn transmit(&mut self, apdu: &[u8], reader: &str) -> ScardResult<Vec<u8>> {
        let log = tracing::enabled!(tracing::Level::DEBUG);
        if log {
            tracing::debug!("{reader} > {}", self.redactor.command(apdu));
        }
        match self.backend.transmit(apdu) {
            Ok(resp) => {
                if log {
                    tracing::debug!("{reader} < {}", self.redactor.response(&resp));
                }
                Ok(resp)
            }
            Err(e) => {
                self.mark_removed(&e, reader);
                Err(ScardError::RemovedCard)
            }
        }
    }

    fn ensure_cache(&mut self, reader: &str, opts: &CacheOptions) {
        if self.cache.is_some() || !self.present {
            return;
        }
        let activity = self.events;
        let result = {
            let mut tx = |apdu: &[u8]| -> Result<Vec<u8>, String> {
                self.transmit(apdu, reader).map_err(|e| e.to_string())
            };
            cache::read_card(&mut tx)
        };
        match result.and_then(|info| {
            cache::build_items(&info, Freshness::default(), activity, opts)
                .map(|items| (info.guid, items))
        }) {
            Ok((guid, items)) => {
                tracing::info!(
                    "{reader}: cache built, {} items, CHUID GUID {}, activity {activity}",
                    items.len(),
                    hex::encode(guid)
                );
                self.cache = Some(BuiltCache { guid, items });
            }
            Err(e) => tracing::warn!("{reader}: no cache for this card: {e}"),
        }
    }

    fn power_cycle(&mut self, d: Disposition, reader: &str) -> ScardResult<()> {
        let r = match d {
            Disposition::Leave => return Ok(()),
            Disposition::Reset => self.backend.reset(),
            Disposition::Unpower | Disposition::Eject => {
                self.backend.power_off();
                self.backend.power_on()
            }
        };
        self.generation += 1;
        self.transaction = None;
        self.redactor = Redactor::default();
        match r {
            Ok(atr) => {
                self.atr = atr;
                Ok(())
            }
            Err(e) => {
                self.mark_removed(&e, reader);
                Err(ScardError::RemovedCard)
            }
        }
    }
}

fn choose_protocol(preferred: u32, share: Share) -> ScardResult<u32> {
    if share == Share::Direct && preferred == 0 {
        return Ok(protocol::UNDEFINED);
    }
    // The card's ATR announces T=1 only.
    if preferred & protocol::T1 != 0 {
        Ok(protocol::T1)
    } else if preferred == 0 {
        Err(ScardError::InvalidValue)
    } else {
        Err(ScardError::ProtoMismatch)
    }
}

impl Shim {
    /// A resource manager over the given readers (one card each).
    pub fn new(readers: Vec<(String, Box<dyn Backend>)>, cache_opts: CacheOptions) -> Shim {
        let readers = readers
            .into_iter()
            .map(|(name, backend)| {
                let mut inner = ReaderInner {
                    backend,
                    present: false,
                    atr: Vec::new(),
                    events: 0,
                    insertion: 0,
                    generation: 0,
                    handles: HashSet::new(),
                    exclusive: None,
                    transaction: None,
                    cache: None,
                    removed_guids: Vec::new(),
                    redactor: Redactor::default(),
                };
                inner.refresh(&name);
                tracing::info!("reader {name:?}: {}", inner.backend.describe());
                Reader {
                    name,
                    inner: Mutex::new(inner),
                    transaction_free: Condvar::new(),
                }
            })
            .collect();
        Shim {
            readers,
            tables: Mutex::new(Tables {
                next: 0x0100_0000,
                ..Tables::default()
            }),
            epoch: Mutex::new(0),
            changed: Condvar::new(),
            written: Mutex::new(HashMap::new()),
            cache_opts,
        }
    }

    fn notify(&self) {
        *lock(&self.epoch) += 1;
        self.changed.notify_all();
    }

    fn new_id(t: &mut Tables) -> u64 {
        // Ids stay below 2^31 so they fit every ABI's handle type; the
        // stride keeps context and card handles visibly different.
        t.next = (t.next + 0x11) & 0x7FFF_FFFF;
        if t.next == 0 {
            t.next = 0x11;
        }
        t.next
    }

    // ---- contexts -------------------------------------------------------

    pub fn establish_context(&self, scope: u32) -> ScardResult<u64> {
        if scope > 2 {
            return Err(ScardError::InvalidValue);
        }
        let mut t = lock(&self.tables);
        let id = Shim::new_id(&mut t);
        t.contexts.insert(id, ContextState::default());
        Ok(id)
    }

    pub fn release_context(&self, ctx: u64) -> ScardResult<()> {
        let handles: Vec<u64> = {
            let mut t = lock(&self.tables);
            if t.contexts.remove(&ctx).is_none() {
                return Err(ScardError::InvalidHandle);
            }
            t.handles
                .iter()
                .filter(|(_, h)| h.context == ctx)
                .map(|(id, _)| *id)
                .collect()
        };
        for h in handles {
            let _ = self.disconnect(h, Disposition::Leave);
        }
        // Wake a GetStatusChange still waiting on this context.
        self.notify();
        Ok(())
    }

    pub fn is_valid_context(&self, ctx: u64) -> ScardResult<()> {
        if lock(&self.tables).contexts.contains_key(&ctx) {
            Ok(())
        } else {
            Err(ScardError::InvalidHandle)
        }
    }

    pub fn cancel(&self, ctx: u64) -> ScardResult<()> {
        {
            let mut t = lock(&self.tables);
            let c = t.contexts.get_mut(&ctx).ok_or(ScardError::InvalidHandle)?;
            c.cancels += 1;
        }
        self.notify();
        Ok(())
    }

    // ---- readers and cards ---------------------------------------------

    pub fn reader_names(&self) -> Vec<String> {
        self.readers.iter().map(|r| r.name.clone()).collect()
    }

    /// SCardListReaders: `ctx` None is allowed where Windows allows it.
    pub fn list_readers(
        &self,
        ctx: Option<u64>,
        groups: Option<&[String]>,
    ) -> ScardResult<Vec<String>> {
        if let Some(c) = ctx {
            self.is_valid_context(c)?;
        }
        let known = [
            "SCard$DefaultReaders",
            "SCard$AllReaders",
            "SCard$LocalReaders",
            "SCard$SystemReaders",
            "",
        ];
        let in_group = match groups {
            None => true,
            Some(g) => g
                .iter()
                .any(|g| known.iter().any(|k| k.eq_ignore_ascii_case(g))),
        };
        if !in_group || self.readers.is_empty() {
            return Err(ScardError::NoReadersAvailable);
        }
        Ok(self.reader_names())
    }

    pub fn list_reader_groups(&self, ctx: Option<u64>) -> ScardResult<Vec<String>> {
        if let Some(c) = ctx {
            self.is_valid_context(c)?;
        }
        Ok(vec!["SCard$DefaultReaders".into()])
    }

    /// SCardListCards: every card we serve is a PIV card.
    pub fn list_cards(&self, ctx: Option<u64>) -> ScardResult<Vec<String>> {
        if let Some(c) = ctx {
            self.is_valid_context(c)?;
        }
        Ok(vec![consts::PIV_CARD_NAME.into()])
    }

    pub fn card_type_provider_name(
        &self,
        ctx: Option<u64>,
        card: &str,
        provider: u32,
    ) -> ScardResult<String> {
        if let Some(c) = ctx {
            self.is_valid_context(c)?;
        }
        if !card.eq_ignore_ascii_case(consts::PIV_CARD_NAME) {
            return Err(ScardError::UnknownCard);
        }
        match provider {
            consts::provider::CSP => Ok(consts::CSP_NAME.into()),
            consts::provider::KSP => Ok(consts::KSP_NAME.into()),
            consts::provider::CARD_MODULE => Ok(consts::CARD_MODULE_NAME.into()),
            consts::provider::PRIMARY => Err(ScardError::UnsupportedFeature),
            _ => Err(ScardError::InvalidParameter),
        }
    }

    fn reader_index(&self, name: &str) -> Option<usize> {
        self.readers
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(name))
    }

    pub fn device_type_id(&self, ctx: u64, reader: &str) -> ScardResult<u32> {
        self.is_valid_context(ctx)?;
        self.reader_index(reader)
            .map(|_| consts::READER_TYPE_USB)
            .ok_or(ScardError::UnknownReader)
    }

    fn poll_changeable(&self) {
        let mut any = false;
        for r in &self.readers {
            let mut g = lock(&r.inner);
            if g.backend.can_change() && g.refresh(&r.name) {
                any = true;
            }
        }
        if any {
            self.notify();
        }
    }

    fn has_changeable(&self) -> bool {
        self.readers
            .iter()
            .any(|r| lock(&r.inner).backend.can_change())
    }

    fn evaluate(&self, s: &mut ReaderStateIo) -> bool {
        if s.current & state::IGNORE != 0 {
            s.event = s.current & !state::CHANGED;
            return false;
        }
        if s.name.eq_ignore_ascii_case(consts::PNP_NOTIFICATION) {
            let n = self.readers.len() as u32;
            let changed = (s.current >> 16) != n;
            s.event = (n << 16) | if changed { state::CHANGED } else { 0 };
            s.atr.clear();
            return changed;
        }
        let Some(i) = self.reader_index(&s.name) else {
            let changed = s.current & state::UNKNOWN == 0;
            s.event = state::UNKNOWN | if changed { state::CHANGED } else { 0 };
            s.atr.clear();
            return changed;
        };
        let (ev, atr) = {
            let g = lock(&self.readers[i].inner);
            (g.event_state(), g.atr.clone())
        };
        let mask = state::EMPTY
            | state::PRESENT
            | state::EXCLUSIVE
            | state::INUSE
            | state::MUTE
            | state::UNAVAILABLE
            | state::UNKNOWN
            | state::UNPOWERED;
        let count = s.current >> 16;
        let changed = s.current == state::UNAWARE
            || (s.current & mask) != (ev & mask)
            || (count != 0 && count != ev >> 16);
        s.event = ev | if changed { state::CHANGED } else { 0 };
        s.atr = atr;
        changed
    }

    /// SCardGetStatusChange. `timeout_ms` u32::MAX waits forever.
    pub fn get_status_change(
        &self,
        ctx: u64,
        timeout_ms: u32,
        states: &mut [ReaderStateIo],
    ) -> ScardResult<()> {
        let cancels0 = {
            let t = lock(&self.tables);
            t.contexts
                .get(&ctx)
                .ok_or(ScardError::InvalidHandle)?
                .cancels
        };
        let deadline = (timeout_ms != u32::MAX)
            .then(|| Instant::now() + Duration::from_millis(timeout_ms.into()));
        let poll = self.has_changeable();
        loop {
            let epoch0 = *lock(&self.epoch);
            if poll {
                self.poll_changeable();
            }
            let mut any = false;
            for s in states.iter_mut() {
                any |= self.evaluate(s);
            }
            if any {
                return Ok(());
            }
            {
                let t = lock(&self.tables);
                match t.contexts.get(&ctx) {
                    None => return Err(ScardError::InvalidHandle),
                    Some(c) if c.cancels != cancels0 => return Err(ScardError::Cancelled),
                    Some(_) => {}
                }
            }
            let now = Instant::now();
            let mut wait = match deadline {
                Some(d) if now >= d => return Err(ScardError::Timeout),
                Some(d) => d - now,
                None => Duration::from_secs(3600),
            };
            if poll {
                wait = wait.min(Duration::from_millis(200));
            }
            let g = lock(&self.epoch);
            if *g == epoch0 {
                let _ = self.changed.wait_timeout(g, wait);
            }
        }
    }

    fn handle(&self, h: u64) -> ScardResult<HandleState> {
        lock(&self.tables)
            .handles
            .get(&h)
            .copied()
            .ok_or(ScardError::InvalidHandle)
    }

    fn check_fresh(g: &ReaderInner, hs: &HandleState) -> ScardResult<()> {
        if g.insertion != hs.insertion || (!g.present && hs.share != Share::Direct) {
            Err(ScardError::RemovedCard)
        } else if g.generation != hs.generation {
            Err(ScardError::ResetCard)
        } else {
            Ok(())
        }
    }

    /// SCardConnect → (handle, active protocol).
    pub fn connect(
        &self,
        ctx: u64,
        reader: &str,
        share: Share,
        preferred: u32,
    ) -> ScardResult<(u64, u32)> {
        self.is_valid_context(ctx)?;
        let i = self.reader_index(reader).ok_or(ScardError::UnknownReader)?;
        let r = &self.readers[i];
        let mut g = lock(&r.inner);
        if g.refresh(&r.name) {
            self.notify();
        }
        if !g.present && share != Share::Direct {
            return Err(ScardError::NoSmartcard);
        }
        match share {
            Share::Exclusive if !g.handles.is_empty() => return Err(ScardError::SharingViolation),
            _ if g.exclusive.is_some() => return Err(ScardError::SharingViolation),
            _ => {}
        }
        let proto = choose_protocol(preferred, share)?;
        g.ensure_cache(&r.name, &self.cache_opts);
        let hs = HandleState {
            context: ctx,
            reader: i,
            share,
            protocol: proto,
            insertion: g.insertion,
            generation: g.generation,
        };
        let id = {
            let mut t = lock(&self.tables);
            if !t.contexts.contains_key(&ctx) {
                return Err(ScardError::InvalidHandle);
            }
            let id = Shim::new_id(&mut t);
            t.handles.insert(id, hs);
            id
        };
        g.handles.insert(id);
        if share == Share::Exclusive {
            g.exclusive = Some(id);
        }
        drop(g);
        self.notify();
        tracing::debug!(
            "{}: connected handle {id:#x} {share:?} protocol {proto}",
            r.name
        );
        Ok((id, proto))
    }

    pub fn reconnect(
        &self,
        h: u64,
        share: Share,
        preferred: u32,
        init: Disposition,
    ) -> ScardResult<u32> {
        let hs = self.handle(h)?;
        let r = &self.readers[hs.reader];
        let mut g = lock(&r.inner);
        g.refresh(&r.name);
        if !g.present && share != Share::Direct {
            return Err(ScardError::NoSmartcard);
        }
        let others = g.handles.iter().any(|o| *o != h);
        if (share == Share::Exclusive && others) || g.exclusive.is_some_and(|o| o != h) {
            return Err(ScardError::SharingViolation);
        }
        let proto = choose_protocol(preferred, share)?;
        if g.present {
            g.power_cycle(init, &r.name)?;
        }
        g.exclusive = (share == Share::Exclusive).then_some(h);
        let (insertion, generation) = (g.insertion, g.generation);
        g.ensure_cache(&r.name, &self.cache_opts);
        {
            let mut t = lock(&self.tables);
            let e = t.handles.get_mut(&h).ok_or(ScardError::InvalidHandle)?;
            *e = HandleState {
                share,
                protocol: proto,
                insertion,
                generation,
                ..*e
            };
        }
        drop(g);
        r.transaction_free.notify_all();
        self.notify();
        Ok(proto)
    }

    pub fn disconnect(&self, h: u64, d: Disposition) -> ScardResult<()> {
        let hs = lock(&self.tables)
            .handles
            .remove(&h)
            .ok_or(ScardError::InvalidHandle)?;
        let r = &self.readers[hs.reader];
        let mut g = lock(&r.inner);
        g.handles.remove(&h);
        if g.exclusive == Some(h) {
            g.exclusive = None;
        }
        if g.transaction.is_some_and(|(o, _)| o == h) {
            g.transaction = None;
        }
        if g.present && g.insertion == hs.insertion {
            let _ = g.power_cycle(d, &r.name);
        }
        drop(g);
        r.transaction_free.notify_all();
        self.notify();
        Ok(())
    }

    /// Waits until no other handle holds the reader's transaction.
    fn wait_turn<'a>(
        &self,
        r: &'a Reader,
        mut g: MutexGuard<'a, ReaderInner>,
        h: u64,
    ) -> ScardResult<MutexGuard<'a, ReaderInner>> {
        while g.transaction.is_some_and(|(o, _)| o != h) {
            g = r
                .transaction_free
                .wait(g)
                .unwrap_or_else(|p| p.into_inner());
            if !lock(&self.tables).handles.contains_key(&h) {
                return Err(ScardError::InvalidHandle);
            }
        }
        Ok(g)
    }

    pub fn begin_transaction(&self, h: u64) -> ScardResult<()> {
        let hs = self.handle(h)?;
        let r = &self.readers[hs.reader];
        let g = lock(&r.inner);
        Shim::check_fresh(&g, &hs)?;
        let mut g = self.wait_turn(r, g, h)?;
        let hs = self.handle(h)?;
        Shim::check_fresh(&g, &hs)?;
        g.transaction = Some((h, g.transaction.map_or(0, |(_, d)| d) + 1));
        Ok(())
    }

    pub fn end_transaction(&self, h: u64, d: Disposition) -> ScardResult<()> {
        let hs = self.handle(h)?;
        let r = &self.readers[hs.reader];
        let mut g = lock(&r.inner);
        Shim::check_fresh(&g, &hs)?;
        match g.transaction {
            Some((o, depth)) if o == h => {
                g.transaction = if depth > 1 {
                    Some((h, depth - 1))
                } else {
                    None
                };
            }
            _ => return Err(ScardError::NotTransacted),
        }
        if d != Disposition::Leave {
            g.power_cycle(d, &r.name)?;
            let generation = g.generation;
            if let Some(e) = lock(&self.tables).handles.get_mut(&h) {
                e.generation = generation;
            }
        }
        drop(g);
        r.transaction_free.notify_all();
        Ok(())
    }

    /// SCardTransmit: the APDU's response data + SW.
    pub fn transmit(
        &self,
        h: u64,
        send_protocol: Option<u32>,
        apdu: &[u8],
    ) -> ScardResult<Vec<u8>> {
        let hs = self.handle(h)?;
        if apdu.is_empty() || apdu.len() > consts::MAX_APDU {
            return Err(ScardError::InvalidParameter);
        }
        if hs.protocol == protocol::UNDEFINED {
            return Err(ScardError::ProtoMismatch);
        }
        if let Some(p) = send_protocol {
            if p & (protocol::T0 | protocol::T1) == 0 {
                return Err(ScardError::ProtoMismatch);
            }
        }
        let r = &self.readers[hs.reader];
        let g = lock(&r.inner);
        Shim::check_fresh(&g, &hs)?;
        let mut g = self.wait_turn(r, g, h)?;
        Shim::check_fresh(&g, &hs)?;
        let resp = g.transmit(apdu, &r.name);
        if resp.is_err() {
            drop(g);
            self.notify();
        }
        resp
    }

    pub fn status(&self, h: u64) -> ScardResult<Status> {
        let hs = self.handle(h)?;
        let r = &self.readers[hs.reader];
        let g = lock(&r.inner);
        Shim::check_fresh(&g, &hs)?;
        Ok(Status {
            reader: r.name.clone(),
            state: if g.present {
                CardState::Specific
            } else {
                CardState::Absent
            },
            protocol: hs.protocol,
            atr: g.atr.clone(),
        })
    }

    pub fn control(&self, h: u64, code: Control, _input: &[u8]) -> ScardResult<Vec<u8>> {
        self.handle(h)?;
        match code {
            Control::GetFeatureRequest => Ok(Vec::new()),
            Control::Other(c) => {
                tracing::debug!("SCardControl code {c:#x} not supported");
                Err(ScardError::UnsupportedFeature)
            }
        }
    }

    /// SCardGetAttrib: the raw attribute bytes (strings NUL-terminated).
    pub fn get_attrib(&self, h: u64, id: u32) -> ScardResult<Vec<u8>> {
        use consts::attr;
        let hs = self.handle(h)?;
        let r = &self.readers[hs.reader];
        let g = lock(&r.inner);
        let cstr = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            v.push(0);
            v
        };
        let wstr = |s: &str| {
            s.encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>()
        };
        Ok(match id {
            attr::ATR_STRING => {
                if !g.present {
                    return Err(ScardError::NoSmartcard);
                }
                g.atr.clone()
            }
            attr::VENDOR_NAME => cstr(consts::VENDOR_NAME),
            attr::VENDOR_IFD_TYPE => cstr(consts::IFD_TYPE),
            attr::VENDOR_IFD_VERSION => 0x0100_0000u32.to_le_bytes().to_vec(),
            attr::VENDOR_IFD_SERIAL_NO => cstr(&format!("{}", hs.reader)),
            attr::CHANNEL_ID => 0x0020_0000u32.to_le_bytes().to_vec(),
            attr::ASYNC_PROTOCOL_TYPES => protocol::T1.to_le_bytes().to_vec(),
            attr::CURRENT_PROTOCOL_TYPE => hs.protocol.to_le_bytes().to_vec(),
            attr::MAX_IFSD => 254u32.to_le_bytes().to_vec(),
            attr::CHARACTERISTICS => 0u32.to_le_bytes().to_vec(),
            attr::ICC_PRESENCE => vec![if g.present { 2 } else { 0 }],
            attr::ICC_INTERFACE_STATUS => vec![u8::from(g.present)],
            attr::ICC_TYPE_PER_ATR => vec![0],
            attr::MAXINPUT => (consts::MAX_APDU as u32).to_le_bytes().to_vec(),
            attr::DEVICE_UNIT => (hs.reader as u32).to_le_bytes().to_vec(),
            attr::DEVICE_IN_USE => u32::from(!g.handles.is_empty()).to_le_bytes().to_vec(),
            attr::DEVICE_FRIENDLY_NAME_A | attr::DEVICE_SYSTEM_NAME_A => cstr(&r.name),
            attr::DEVICE_FRIENDLY_NAME_W | attr::DEVICE_SYSTEM_NAME_W => wstr(&r.name),
            _ => return Err(ScardError::UnsupportedFeature),
        })
    }

    // ---- cache ------------------------------------------------------------

    fn cache_reader(&self, card_id: &[u8; 16]) -> Option<usize> {
        let mut with_card = Vec::new();
        for (i, r) in self.readers.iter().enumerate() {
            let mut g = lock(&r.inner);
            if !g.present {
                continue;
            }
            g.ensure_cache(&r.name, &self.cache_opts);
            if g.cache.as_ref().is_some_and(|c| &c.guid == card_id) {
                return Some(i);
            }
            with_card.push(i);
        }
        // msclmd's card identifier is not guaranteed to be the CHUID GUID;
        // with a single card there is no ambiguity.
        (with_card.len() == 1).then(|| with_card[0])
    }

    /// Forgets what msclmd wrote for cards that have since been removed.
    fn purge_removed(&self) {
        let mut gone = Vec::new();
        for r in &self.readers {
            gone.append(&mut lock(&r.inner).removed_guids);
        }
        if !gone.is_empty() {
            lock(&self.written).retain(|(id, _), _| !gone.contains(id));
        }
    }

    /// SCardReadCache.
    pub fn read_cache(
        &self,
        ctx: u64,
        card_id: &[u8; 16],
        freshness: u32,
        name: &str,
    ) -> ScardResult<Vec<u8>> {
        self.is_valid_context(ctx)?;
        self.purge_removed();
        if let Some(w) = lock(&self.written).get(&(*card_id, name.to_string())) {
            if w.freshness != freshness {
                return Err(ScardError::CacheItemStale);
            }
            return Ok(w.data.clone());
        }
        let i = self
            .cache_reader(card_id)
            .ok_or(ScardError::CacheItemNotFound)?;
        let g = lock(&self.readers[i].inner);
        g.cache
            .as_ref()
            .and_then(|c| c.items.iter().find(|it| it.name == name))
            .map(|it| it.value.clone())
            .ok_or(ScardError::CacheItemNotFound)
    }

    /// SCardWriteCache: kept for the life of the process.
    pub fn write_cache(
        &self,
        ctx: u64,
        card_id: &[u8; 16],
        freshness: u32,
        name: &str,
        data: &[u8],
    ) -> ScardResult<()> {
        self.is_valid_context(ctx)?;
        if data.len() > MAX_CACHE_ITEM {
            return Err(ScardError::CacheItemTooBig);
        }
        self.purge_removed();
        lock(&self.written).insert(
            (*card_id, name.to_string()),
            Written {
                freshness,
                data: data.to_vec(),
            },
        );
        Ok(())
    }

    /// The items pre-built for a reader's current card (for tools and tests).
    pub fn cache_items(&self, reader: usize) -> Option<Vec<CacheItem>> {
        let r = self.readers.get(reader)?;
        let mut g = lock(&r.inner);
        g.ensure_cache(&r.name, &self.cache_opts);
        g.cache.as_ref().map(|c| c.items.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::attr;
    use piv_applet::tlv;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const CERT: &[u8] = include_bytes!("../tests/data/rsa2048.cert.der");
    const GUID: [u8; 16] = [
        0x58, 0xc6, 0x8a, 0x1d, 0x65, 0xe0, 0xa0, 0x92, 0x85, 0xaf, 0x09, 0x0b, 0x07, 1, 2, 3,
    ];
    const ATR: &[u8] = &[
        0x3B, 0x8D, 0x01, 0x80, 0xFB, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01,
        0x00, 0x4D,
    ];

    /// A minimal PIV card: SELECT, GET DATA (CHUID, 9A certificate) with
    /// 61xx chaining, and a power state; removable from outside.
    struct Fake {
        pending: Vec<u8>,
        resets: Arc<std::sync::atomic::AtomicUsize>,
        present: Arc<AtomicBool>,
    }

    impl Backend for Fake {
        fn power_on(&mut self) -> Result<Vec<u8>, String> {
            Ok(ATR.to_vec())
        }
        fn power_off(&mut self) {}
        fn reset(&mut self) -> Result<Vec<u8>, String> {
            self.resets.fetch_add(1, Ordering::SeqCst);
            Ok(ATR.to_vec())
        }
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String> {
            if !self.present.load(Ordering::SeqCst) {
                return Err("gone".into());
            }
            let full = match (apdu[1], apdu.get(7..10)) {
                (0xA4, _) => vec![],
                (0xC0, _) => std::mem::take(&mut self.pending),
                (0xCB, Some([0x5F, 0xC1, 0x02])) => tlv::encode(0x53, &tlv::encode(0x34, &GUID)),
                (0xCB, Some([0x5F, 0xC1, 0x05])) => {
                    let mut v = tlv::encode(0x70, CERT);
                    tlv::write(&mut v, 0x71, &[0]);
                    tlv::encode(0x53, &v)
                }
                (0x00, _) => vec![],
                _ => return Ok(vec![0x6A, 0x82]),
            };
            let n = full.len().min(256);
            self.pending = full[n..].to_vec();
            let mut r = full[..n].to_vec();
            let rest = self.pending.len();
            r.extend_from_slice(&if rest == 0 {
                [0x90, 0x00]
            } else {
                [0x61, rest.min(255) as u8]
            });
            Ok(r)
        }
        fn poll_present(&mut self) -> bool {
            self.present.load(Ordering::SeqCst)
        }
        fn can_change(&self) -> bool {
            true
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    struct Rig {
        shim: Arc<Shim>,
        present: Arc<AtomicBool>,
        resets: Arc<std::sync::atomic::AtomicUsize>,
    }

    fn rig() -> Rig {
        let present = Arc::new(AtomicBool::new(true));
        let resets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fake = Fake {
            pending: vec![],
            resets: resets.clone(),
            present: present.clone(),
        };
        let shim = Shim::new(
            vec![("Reader 0".into(), Box::new(fake))],
            CacheOptions::default(),
        );
        Rig {
            shim: Arc::new(shim),
            present,
            resets,
        }
    }

    fn rs(name: &str, current: u32) -> ReaderStateIo {
        ReaderStateIo {
            name: name.into(),
            current,
            ..Default::default()
        }
    }

    #[test]
    fn contexts_and_handles_are_checked() {
        let r = rig();
        let s = &r.shim;
        assert_eq!(s.establish_context(7), Err(ScardError::InvalidValue));
        let c = s.establish_context(0).unwrap();
        assert_eq!(s.is_valid_context(c), Ok(()));
        assert_eq!(
            s.list_readers(Some(c), None).unwrap(),
            vec!["Reader 0".to_string()]
        );
        assert_eq!(
            s.list_readers(Some(c), Some(&["Other".into()])),
            Err(ScardError::NoReadersAvailable)
        );
        assert_eq!(
            s.connect(c, "nope", Share::Shared, 3),
            Err(ScardError::UnknownReader)
        );
        assert_eq!(
            s.connect(c, "Reader 0", Share::Shared, protocol::T0),
            Err(ScardError::ProtoMismatch)
        );
        assert_eq!(
            s.transmit(12345, None, &[0, 0, 0, 0]),
            Err(ScardError::InvalidHandle)
        );
        assert_eq!(s.status(999).err(), Some(ScardError::InvalidHandle));
        let (h, p) = s.connect(c, "reader 0", Share::Shared, 3).unwrap();
        assert_eq!(p, protocol::T1);
        assert_eq!(
            s.transmit(h, Some(protocol::T1), &[0, 0, 0, 0]).unwrap(),
            vec![0x90, 0x00]
        );
        assert_eq!(s.release_context(c), Ok(()));
        assert_eq!(
            s.transmit(h, None, &[0, 0, 0, 0]),
            Err(ScardError::InvalidHandle),
            "handles die with their context"
        );
        assert_eq!(s.release_context(c), Err(ScardError::InvalidHandle));
    }

    #[test]
    fn sharing_rules() {
        let r = rig();
        let s = &r.shim;
        let c = s.establish_context(0).unwrap();
        let (h1, _) = s.connect(c, "Reader 0", Share::Shared, 3).unwrap();
        assert_eq!(
            s.connect(c, "Reader 0", Share::Exclusive, 3),
            Err(ScardError::SharingViolation)
        );
        s.disconnect(h1, Disposition::Leave).unwrap();
        let (h2, _) = s.connect(c, "Reader 0", Share::Exclusive, 3).unwrap();
        assert_eq!(
            s.connect(c, "Reader 0", Share::Shared, 3),
            Err(ScardError::SharingViolation)
        );
        let mut st = [rs("Reader 0", 0)];
        s.get_status_change(c, 0, &mut st).unwrap();
        assert_eq!(
            st[0].event & 0xFFFF,
            state::PRESENT | state::INUSE | state::EXCLUSIVE | state::CHANGED
        );
        s.disconnect(h2, Disposition::Leave).unwrap();
    }

    #[test]
    fn status_change_answers_at_once_waits_and_cancels() {
        let r = rig();
        let s = r.shim.clone();
        let c = s.establish_context(0).unwrap();
        let mut st = [
            rs("Reader 0", state::UNAWARE),
            rs(consts::PNP_NOTIFICATION, 0),
            rs("ghost", 0),
        ];
        s.get_status_change(c, u32::MAX, &mut st).unwrap();
        assert_eq!(st[0].event, 0x0001_0000 | state::PRESENT | state::CHANGED);
        assert_eq!(st[0].atr, ATR);
        assert_eq!(st[1].event, 0x0001_0000 | state::CHANGED, "one reader");
        assert_eq!(st[2].event, state::UNKNOWN | state::CHANGED);
        // Feed the answer back: nothing differs, so it times out.
        let mut st = [
            rs("Reader 0", st[0].event & !state::CHANGED),
            rs(consts::PNP_NOTIFICATION, 0x0001_0000),
        ];
        let t = Instant::now();
        assert_eq!(
            s.get_status_change(c, 150, &mut st),
            Err(ScardError::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(140));
        // A waiter is released by SCardCancel from another thread.
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || {
            let mut st = [rs("Reader 0", 0x0001_0000 | state::PRESENT)];
            s2.get_status_change(c, u32::MAX, &mut st)
        });
        // A cancel only reaches calls already waiting, so repeat it until
        // the waiter (which may start late on a loaded machine) is out.
        while !waiter.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
            s.cancel(c).unwrap();
        }
        assert_eq!(waiter.join().unwrap(), Err(ScardError::Cancelled));
        // And by a card removal, with the event count going up.
        let s3 = s.clone();
        let waiter = std::thread::spawn(move || {
            let mut st = [rs("Reader 0", 0x0001_0000 | state::PRESENT)];
            s3.get_status_change(c, 5000, &mut st).map(|_| st[0].event)
        });
        std::thread::sleep(Duration::from_millis(100));
        r.present.store(false, Ordering::SeqCst);
        let ev = waiter.join().unwrap().unwrap();
        assert_eq!(ev, 0x0002_0000 | state::EMPTY | state::CHANGED);
    }

    #[test]
    fn transactions_serialize_handles_and_resets_are_reported() {
        let r = rig();
        let s = r.shim.clone();
        let c = s.establish_context(0).unwrap();
        let (h1, _) = s.connect(c, "Reader 0", Share::Shared, 3).unwrap();
        let (h2, _) = s.connect(c, "Reader 0", Share::Shared, 3).unwrap();
        assert_eq!(
            s.end_transaction(h1, Disposition::Leave),
            Err(ScardError::NotTransacted)
        );
        s.begin_transaction(h1).unwrap();
        let s2 = s.clone();
        let t = Instant::now();
        let other = std::thread::spawn(move || {
            s2.transmit(h2, None, &[0, 0, 0, 0]).map(|_| Instant::now())
        });
        std::thread::sleep(Duration::from_millis(150));
        s.end_transaction(h1, Disposition::Reset).unwrap();
        // h2 waited for the transaction, then found the card reset under it.
        assert_eq!(other.join().unwrap(), Err(ScardError::ResetCard));
        assert!(t.elapsed() >= Duration::from_millis(140));
        assert_eq!(r.resets.load(Ordering::SeqCst), 1);
        assert!(
            s.transmit(h1, None, &[0, 0, 0, 0]).is_ok(),
            "the handle that reset keeps working"
        );
        assert_eq!(
            s.reconnect(h2, Share::Shared, 3, Disposition::Leave),
            Ok(protocol::T1)
        );
        assert!(s.transmit(h2, None, &[0, 0, 0, 0]).is_ok());
        r.present.store(false, Ordering::SeqCst);
        assert_eq!(
            s.transmit(h2, None, &[0, 0, 0, 0]),
            Err(ScardError::RemovedCard)
        );
        assert_eq!(s.status(h1).err(), Some(ScardError::RemovedCard));
    }

    #[test]
    fn cache_headers_carry_the_reported_event_count() {
        let r = rig();
        let s = &r.shim;
        let c = s.establish_context(0).unwrap();
        let mut st = [rs("Reader 0", 0)];
        s.get_status_change(c, 0, &mut st).unwrap();
        let activity = (st[0].event >> 16) as u16;
        let (_h, _) = s.connect(c, "Reader 0", Share::Shared, 3).unwrap();
        let item = s
            .read_cache(c, &GUID, 0, cache::names::CAPABILITIES)
            .unwrap();
        assert_eq!(&item[..6], &cache::cardcf(Freshness::default(), activity));
        assert_eq!(&item[..6], &[1, 0, 2, 0, 0x0C, 0], "activity 1 as reported");
        let kxc = s
            .read_cache(c, &GUID, 7, "Cached_GeneralFile/mscp/kxc00")
            .unwrap();
        assert_eq!(
            cache::decompress_cert(cache::split_header(&kxc).unwrap().1).unwrap(),
            CERT
        );
        assert_eq!(
            s.read_cache(c, &GUID, 0, "nothing"),
            Err(ScardError::CacheItemNotFound)
        );
        // What msclmd writes comes back, with the freshness it was written with.
        s.write_cache(c, &GUID, 5, "Cached_CardProperty_Read Only Mode_0", b"new")
            .unwrap();
        assert_eq!(
            s.read_cache(c, &GUID, 5, "Cached_CardProperty_Read Only Mode_0")
                .unwrap(),
            b"new"
        );
        assert_eq!(
            s.read_cache(c, &GUID, 6, "Cached_CardProperty_Read Only Mode_0"),
            Err(ScardError::CacheItemStale)
        );
        assert_eq!(
            s.write_cache(c, &GUID, 1, "big", &vec![0; MAX_CACHE_ITEM + 1]),
            Err(ScardError::CacheItemTooBig)
        );
        assert_eq!(
            s.read_cache(999, &GUID, 0, "x"),
            Err(ScardError::InvalidHandle)
        );
    }

    #[test]
    fn attributes() {
        let r = rig();
        let s = &r.shim;
        let c = s.establish_context(0).unwrap();
        let (h, _) = s.connect(c, "Reader 0", Share::Shared, 3).unwrap();
        assert_eq!(s.get_attrib(h, attr::ATR_STRING).unwrap(), ATR);
        assert_eq!(
            s.get_attrib(h, attr::VENDOR_NAME).unwrap(),
            b"Virtual PIV\0"
        );
        assert_eq!(
            s.get_attrib(h, attr::CURRENT_PROTOCOL_TYPE).unwrap(),
            [2, 0, 0, 0]
        );
        assert_eq!(
            s.get_attrib(h, attr::DEVICE_FRIENDLY_NAME_A).unwrap(),
            b"Reader 0\0"
        );
        assert_eq!(
            s.get_attrib(h, attr::DEVICE_SYSTEM_NAME_W).unwrap().len(),
            18
        );
        assert_eq!(
            s.get_attrib(h, 0x1234_5678),
            Err(ScardError::UnsupportedFeature)
        );
        assert_eq!(
            s.control(h, Control::GetFeatureRequest, &[]).unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(
            s.card_type_provider_name(None, consts::PIV_CARD_NAME, consts::provider::CARD_MODULE)
                .unwrap(),
            "msclmd.dll"
        );
        assert_eq!(
            s.card_type_provider_name(None, "other", 2),
            Err(ScardError::UnknownCard)
        );
        let st = s.status(h).unwrap();
        assert_eq!(
            (st.state, st.protocol, st.atr.as_slice()),
            (CardState::Specific, protocol::T1, ATR)
        );
    }
}
