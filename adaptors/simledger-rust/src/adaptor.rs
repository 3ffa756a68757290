//! The LedgerAdaptor service over the simulated ledger: the adaptor's parts and its life, the
//! link to the ledger, accounts and peering, payments, and incoming settlements.
//!
//! One lock (`inner`) guards the state file, the ledger connection's state and the running
//! peer exchanges; it is never held across an await. Events are published under it, so a
//! WatchEvents stream that takes its snapshot and subscribes under it misses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::config::{self, Config};
use crate::connectivity::Connection;
use crate::log::{debug, error, info, warning};
use crate::pb::adaptor::ledger_adaptor_server::LedgerAdaptor;
use crate::pb::adaptor::*;
use crate::pb::engine::engine_client::EngineClient;
use crate::pb::engine::SendDataRequest;
use crate::pb::simledger::sim_ledger_client::SimLedgerClient;
use crate::pb::simledger::*;
use crate::pb::types::{Amount, ConnectivityState as State};
use crate::state::{AccountRecord, Asset, IncomingRecord, PaymentRecord, StateData, StateFile};
use crate::{backoff, peer, validate};

pub const NAME: &str = "simledger-rust";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const CAPABILITIES: [&str; 5] = ["send_money", "receive_money", "data", "balance", "accounts"];
/// Bounds each call to the ledger.
const LEDGER_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long GetInfo waits for the ledger's first answer: the host asks right after the
/// handshake, usually a few milliseconds before the ledger has answered.
const ASSET_WAIT: Duration = Duration::from_secs(5);
const LEDGER_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
const EXCHANGE_RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));
/// Bounds one ledger-account exchange; SetupAccount waits for its own attempt at most this.
const SEND_DATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How many events a WatchEvents stream may fall behind before it is ended (the host reopens
/// it, and the new stream re-delivers every unacknowledged settlement).
const EVENT_BACKLOG: usize = 1024;

struct Inner {
    state: StateFile,
    link: Connection,
    /// Background ledger-account exchanges, by host account.
    exchanges: HashMap<String, AbortHandle>,
}

pub struct Adaptor {
    cfg: Config,
    ledger: SimLedgerClient<Channel>,
    engine: Option<EngineClient<Channel>>,
    inner: Mutex<Inner>,
    events: broadcast::Sender<WatchEventsResponse>,
    /// True once the ledger's asset is known (from the state file or the ledger).
    asset_known: watch::Sender<bool>,
    /// Cancelled when the adaptor stops; background work and event streams end then.
    stop: CancellationToken,
    /// One SendMoney per idempotency key at a time: the record, the transfer and its outcome
    /// go together.
    key_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn unavailable_write(e: std::io::Error) -> Status {
    Status::unavailable(format!("cannot write the state file: {e}"))
}

fn ledger_error(call: &str, status: &Status) -> String {
    format!("{call}: {:?}: {}", status.code(), status.message())
}

fn amount(value: &str, scale: u32) -> Amount {
    Amount {
        value: value.into(),
        scale,
    }
}

fn incoming_event(record: &IncomingRecord) -> WatchEventsResponse {
    WatchEventsResponse {
        event: Some(watch_events_response::Event::IncomingSettlement(
            IncomingSettlement {
                settlement_id: record.transfer_id.clone(),
                account_id: record.account_id.clone(),
                amount: Some(amount(&record.value, record.scale)),
            },
        )),
    }
}

fn connection_event(link: &Connection) -> WatchEventsResponse {
    WatchEventsResponse {
        event: Some(watch_events_response::Event::ConnectionChanged(
            link.proto(),
        )),
    }
}

impl Adaptor {
    /// Opens the state file and the clients and starts following the ledger and the pending
    /// peer exchanges. Err says what is wrong with the configuration or the state file.
    pub fn start(cfg: Config, stop: CancellationToken) -> Result<Arc<Adaptor>, String> {
        let state = StateFile::open(&cfg.state_path, &cfg.ledger_account)?;
        let ledger = SimLedgerClient::new(
            config::channel(&config::target(&cfg.ledger_addr)?)
                .map_err(|e| format!("{}: {e}", config::ENV_LEDGER_ADDR))?,
        );
        let engine = match &cfg.engine_addr {
            Some(addr) => Some(EngineClient::new(
                config::channel(&config::target(addr)?)
                    .map_err(|e| format!("{}: {e}", config::ENV_ENGINE_ADDR))?,
            )),
            None => None,
        };
        let (asset_known, _) = watch::channel(state.data().asset.is_some());
        let adaptor = Arc::new(Adaptor {
            ledger,
            engine,
            inner: Mutex::new(Inner {
                state,
                link: Connection::new(
                    "ledger",
                    "settlement-system",
                    State::Connecting,
                    SystemTime::now(),
                ),
                exchanges: HashMap::new(),
            }),
            events: broadcast::channel(EVENT_BACKLOG).0,
            asset_known,
            stop,
            key_locks: Mutex::new(HashMap::new()),
            cfg,
        });
        tokio::spawn(Arc::clone(&adaptor).follow_ledger());
        {
            let mut inner = adaptor.lock();
            let pending: Vec<String> = inner
                .state
                .data()
                .accounts
                .iter()
                .filter(|(_, account)| account.peer_ledger_account.is_empty())
                .map(|(id, _)| id.clone())
                .collect();
            for id in pending {
                adaptor.start_exchange_locked(&mut inner, &id);
            }
        }
        info!("adaptor ready",
            "ledger" => adaptor.cfg.ledger_addr,
            "ledger_account" => adaptor.cfg.ledger_account,
            "state_file" => adaptor.cfg.state_path.display(),
            "engine" => adaptor.engine.is_some());
        Ok(adaptor)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug that already ended a request; the state
        // file is consistent on disk whatever it was doing, so go on.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, event: WatchEventsResponse) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.events.send(event);
    }

    fn move_link_locked(&self, inner: &mut Inner, next: State, cause: &str) {
        match inner.link.to(next, cause, SystemTime::now()) {
            Ok(moved) => {
                inner.link = moved;
                self.publish(connection_event(&inner.link));
            }
            Err(bug) => error!("connection state", "error" => bug),
        }
    }

    // --- the link to the ledger -----------------------------------------------------------

    /// Keeps the link up until the adaptor stops: CONNECTING at start, READY once the ledger
    /// answered and the stream of transfers into our account is open, TRANSIENT_FAILURE (with
    /// the error and the count of attempts) while it is not, CONNECTING again after a jittered
    /// pause that doubles up to 2 s. SHUTDOWN when the adaptor stops.
    async fn follow_ledger(self: Arc<Self>) {
        loop {
            let ended = tokio::select! {
                ended = self.ledger_session() => ended,
                _ = self.stop.cancelled() => break,
            };
            let attempts = {
                let mut inner = self.lock();
                self.move_link_locked(&mut inner, State::TransientFailure, &ended);
                inner.link.attempts
            };
            debug!("ledger link down", "error" => ended, "attempts" => attempts);
            let pause = backoff::delay(attempts, LEDGER_RETRY.0, LEDGER_RETRY.1, backoff::jitter());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.cancelled() => break,
            }
            let mut inner = self.lock();
            self.move_link_locked(&mut inner, State::Connecting, "");
        }
        let mut inner = self.lock();
        self.move_link_locked(&mut inner, State::Shutdown, "");
    }

    /// Learns the asset, makes sure our account exists and follows the transfers into it from
    /// the durable cursor; returns why it ended.
    async fn ledger_session(&self) -> String {
        let mut ledger = self.ledger.clone();
        let info = match tokio::time::timeout(
            LEDGER_CALL_TIMEOUT,
            ledger.get_ledger_info(GetLedgerInfoRequest {}),
        )
        .await
        {
            Ok(Ok(info)) => info.into_inner(),
            Ok(Err(status)) => return ledger_error("GetLedgerInfo", &status),
            Err(_) => return "GetLedgerInfo: no answer in time".into(),
        };
        if let Err(problem) = self.learn_asset(info) {
            return problem;
        }
        let account = CreateAccountRequest {
            account_id: self.cfg.ledger_account.clone(),
        };
        match tokio::time::timeout(LEDGER_CALL_TIMEOUT, ledger.create_account(account)).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => return ledger_error("CreateAccount", &status),
            Err(_) => return "CreateAccount: no answer in time".into(),
        }
        let cursor = self.lock().state.data().cursor;
        let request = WatchTransfersRequest {
            account_id: self.cfg.ledger_account.clone(),
            after_sequence: cursor,
        };
        let mut stream = match tokio::time::timeout(
            LEDGER_CALL_TIMEOUT,
            ledger.watch_transfers(request),
        )
        .await
        {
            Ok(Ok(stream)) => stream.into_inner(),
            Ok(Err(status)) => return ledger_error("WatchTransfers", &status),
            Err(_) => return "WatchTransfers: the stream did not open in time".into(),
        };
        {
            let mut inner = self.lock();
            self.move_link_locked(&mut inner, State::Ready, "");
        }
        loop {
            match stream.message().await {
                Ok(Some(answer)) => {
                    if let Some(transfer) = answer.transfer {
                        if let Err(e) = self.record_incoming(&transfer) {
                            // Nothing was recorded: the next session resumes from the same cursor.
                            return format!(
                                "cannot record transfer {:?}: {e}",
                                transfer.transfer_id
                            );
                        }
                    }
                }
                Ok(None) => return "WatchTransfers: the ledger ended the stream".into(),
                Err(status) => return ledger_error("WatchTransfers", &status),
            }
        }
    }

    fn learn_asset(&self, info: GetLedgerInfoResponse) -> Result<(), String> {
        let asset = Asset {
            code: info.asset_code,
            scale: info.asset_scale,
        };
        let mut inner = self.lock();
        match &inner.state.data().asset {
            Some(known) if *known == asset => {}
            Some(known) => {
                return Err(format!(
                    "the ledger's asset is now {} at scale {}, but this state file settled {} at scale {}: refusing to mix them",
                    asset.code, asset.scale, known.code, known.scale
                ))
            }
            None => {
                inner.state.update(|d| d.asset = Some(asset)).map_err(|e| format!("cannot write the state file: {e}"))?;
            }
        }
        self.asset_known.send_replace(true);
        Ok(())
    }

    /// Takes one transfer from WatchTransfers: a transfer into our account from another
    /// account is recorded (with the cursor, in one write) and reported once its payer is a
    /// known peer; a mint is funding, not a settlement.
    fn record_incoming(&self, transfer: &LedgerTransfer) -> std::io::Result<()> {
        let mut inner = self.lock();
        if transfer.sequence <= inner.state.data().cursor {
            return Ok(()); // already taken: the stream resumed from an older cursor
        }
        let record = (!transfer.from_account_id.is_empty()
            && transfer.to_account_id == self.cfg.ledger_account)
            .then(|| {
                let value = transfer.amount.clone().unwrap_or_default();
                IncomingRecord {
                    transfer_id: transfer.transfer_id.clone(),
                    from: transfer.from_account_id.clone(),
                    value: value.value,
                    scale: value.scale,
                    sequence: transfer.sequence,
                    account_id: inner
                        .state
                        .data()
                        .account_of_peer(&transfer.from_account_id),
                    acknowledged: false,
                }
            });
        inner.state.update(|d| {
            if let Some(record) = &record {
                d.incoming.push(record.clone());
            }
            d.cursor = transfer.sequence;
        })?;
        match record {
            Some(record) if record.account_id.is_empty() => {
                info!("incoming transfer from a ledger account no peer has named yet: kept",
                    "transfer_id" => record.transfer_id, "from" => record.from);
            }
            Some(record) => {
                info!("incoming settlement", "settlement_id" => record.transfer_id,
                    "account_id" => record.account_id, "amount" => record.value);
                self.publish(incoming_event(&record));
            }
            None => {}
        }
        Ok(())
    }

    // --- peering ---------------------------------------------------------------------------

    /// Sends our ledger account to the peer of `id` and records the one it answers.
    async fn exchange_once(&self, id: &str) -> Result<(), String> {
        let Some(engine) = &self.engine else {
            return Err("no engine".into());
        };
        let request = SendDataRequest {
            account_id: id.into(),
            data: peer::ledger_account_request(&self.cfg.ledger_account),
        };
        let reply = match tokio::time::timeout(SEND_DATA_TIMEOUT, engine.clone().send_data(request))
            .await
        {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return Err(ledger_error("Engine.SendData", &status)),
            Err(_) => return Err("Engine.SendData: no reply in time".into()),
        };
        let theirs = peer::parse_reply(&reply.data, &self.cfg.ledger_account)?;
        let mut inner = self.lock();
        self.record_peer_locked(&mut inner, id, &theirs)
            .map_err(|s| s.message().to_string())
    }

    /// Stores the peer's ledger account and reports the settlements it had already paid, which
    /// were kept until now. NOT_FOUND if `id` is not set up.
    fn record_peer_locked(&self, inner: &mut Inner, id: &str, theirs: &str) -> Result<(), Status> {
        let Some(account) = inner.state.data().accounts.get(id) else {
            return Err(Status::not_found(format!(
                "account_id {id:?} is not set up"
            )));
        };
        let previous = account.peer_ledger_account.clone();
        if let Some(running) = inner.exchanges.remove(id) {
            running.abort();
        }
        if previous == theirs {
            return Ok(());
        }
        let reported = inner
            .state
            .update(|d| {
                d.accounts.insert(
                    id.into(),
                    AccountRecord {
                        peer_ledger_account: theirs.into(),
                    },
                );
                let owner = d.account_of_peer(theirs);
                let mut reported = Vec::new();
                for record in d
                    .incoming
                    .iter_mut()
                    .filter(|r| r.account_id.is_empty() && r.from == theirs)
                {
                    record.account_id = owner.clone();
                    reported.push(record.clone());
                }
                reported
            })
            .map_err(unavailable_write)?;
        if previous.is_empty() {
            info!("the peer's ledger account is known", "account_id" => id, "peer_ledger_account" => theirs);
        } else {
            warning!("the peer's ledger account changed", "account_id" => id, "was" => previous, "now" => theirs);
        }
        for record in &reported {
            self.publish(incoming_event(record));
        }
        Ok(())
    }

    /// Keeps exchanging ledger accounts for `id` in the background until it succeeds, the
    /// account is deleted or the adaptor stops.
    fn start_exchange_locked(self: &Arc<Self>, inner: &mut Inner, id: &str) {
        if self.engine.is_none() || inner.exchanges.contains_key(id) || self.stop.is_cancelled() {
            return;
        }
        let adaptor = Arc::clone(self);
        let account = id.to_string();
        let task = tokio::spawn(async move {
            for attempt in 1.. {
                let pause = backoff::delay(
                    attempt,
                    EXCHANGE_RETRY.0,
                    EXCHANGE_RETRY.1,
                    backoff::jitter(),
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = adaptor.stop.cancelled() => return,
                }
                match adaptor.exchange_once(&account).await {
                    Ok(()) => return,
                    Err(e) => {
                        debug!("ledger account exchange failed", "account_id" => account, "attempt" => attempt, "error" => e)
                    }
                }
            }
        });
        inner.exchanges.insert(id.into(), task.abort_handle());
    }

    // --- payments --------------------------------------------------------------------------

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.key_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the locks nobody holds or waits for.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(locks.entry(key.into()).or_default())
    }

    /// The key's record, made if the key is new: ALREADY_EXISTS for a key used with other
    /// content, NOT_FOUND for an account not set up, FAILED_PRECONDITION while the peer's
    /// ledger account is unknown.
    fn record_payment(&self, id: &str, key: &str, value: &Amount) -> Result<PaymentRecord, Status> {
        let mut inner = self.lock();
        if let Some(known) = inner.state.data().payments.get(key) {
            if known.account_id != id || known.value != value.value || known.scale != value.scale {
                return Err(Status::already_exists(format!(
                    "idempotency_key {:?} was used for account {:?}, amount {} at scale {}: a new settlement needs a new key",
                    validate::clip(key), known.account_id, known.value, known.scale
                )));
            }
            return Ok(known.clone());
        }
        let Some(account) = inner.state.data().accounts.get(id) else {
            return Err(Status::not_found(format!(
                "account_id {id:?} is not set up"
            )));
        };
        if account.peer_ledger_account.is_empty() {
            return Err(Status::failed_precondition(format!(
                "account_id {id:?}: the peer's ledger account is not known yet (the exchange is retried)"
            )));
        }
        let record = PaymentRecord {
            account_id: id.into(),
            value: value.value.clone(),
            scale: value.scale,
            to: account.peer_ledger_account.clone(),
            settlement_id: format!("{}:{key}", self.cfg.ledger_account),
            completed: false,
        };
        inner
            .state
            .update(|d| d.payments.insert(key.into(), record.clone()))
            .map_err(unavailable_write)?;
        Ok(record)
    }

    /// Turns the ledger's refusal into the answer. A definite refusal means no transfer with
    /// this id exists (the ledger checks the id first), so the key's record is removed: nothing
    /// has changed. Anything else leaves the outcome unknown: UNAVAILABLE, retry.
    fn transfer_failed(&self, key: &str, payment: &PaymentRecord, refusal: &Status) -> Status {
        let answer = match refusal.code() {
            Code::FailedPrecondition => {
                Status::failed_precondition(format!("the ledger refused the transfer: {}", refusal.message()))
            }
            Code::NotFound => Status::failed_precondition(format!(
                "the ledger refused the transfer to {:?}: {}",
                payment.to,
                refusal.message()
            )),
            Code::InvalidArgument => {
                Status::invalid_argument(format!("the ledger refused the transfer: {}", refusal.message()))
            }
            Code::AlreadyExists => {
                // Another transfer holds this id: keep the record, the key is spent.
                return Status::already_exists(format!(
                    "the ledger has another transfer with id {:?}: {}",
                    payment.settlement_id,
                    refusal.message()
                ));
            }
            code => {
                return Status::unavailable(format!(
                    "the ledger did not confirm transfer {:?} ({code:?}: {}): outcome unknown, retry with the same key",
                    payment.settlement_id,
                    refusal.message()
                ))
            }
        };
        if let Err(e) = self.lock().state.update(|d| d.payments.remove(key)) {
            error!("cannot forget a refused payment's key", "key" => key, "error" => e);
        }
        answer
    }

    fn asset(&self) -> Option<Asset> {
        self.lock().state.data().asset.clone()
    }
}

/// The gRPC face of the adaptor.
pub struct Service(pub Arc<Adaptor>);

fn completed(payment: &PaymentRecord) -> Response<SendMoneyResponse> {
    Response::new(SendMoneyResponse {
        settlement_id: payment.settlement_id.clone(),
        status: SettlementStatus::Completed as i32,
    })
}

#[tonic::async_trait]
impl LedgerAdaptor for Service {
    async fn get_info(
        &self,
        _: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let mut known = self.0.asset_known.subscribe();
        let _ = tokio::time::timeout(ASSET_WAIT, known.wait_for(|known| *known)).await;
        let Some(asset) = self.0.asset() else {
            return Err(Status::unavailable(
                "the ledger has not answered yet, so its asset is unknown: retry",
            ));
        };
        Ok(Response::new(GetInfoResponse {
            name: NAME.into(),
            version: VERSION.into(),
            ledger: "simledger".into(),
            asset_code: asset.code,
            asset_scale: asset.scale,
            capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            contract_versions: crate::contract::CONTRACT_VERSIONS.to_vec(),
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        let link = self.0.lock().link.clone();
        let ready = match link.state {
            State::Ready => Some(true),
            // The first attempt is under way: cannot tell yet.
            State::Connecting if link.attempts == 0 => None,
            _ => Some(false),
        };
        Ok(Response::new(ProbeResponse {
            ready,
            connections: vec![link.proto()],
        }))
    }

    async fn setup_account(
        &self,
        request: Request<SetupAccountRequest>,
    ) -> Result<Response<SetupAccountResponse>, Status> {
        let id = request.into_inner().account_id;
        validate::account_id(&id).map_err(Status::invalid_argument)?;
        let adaptor = &self.0;
        {
            let mut inner = adaptor.lock();
            match inner.state.data().accounts.get(&id) {
                None => {
                    inner
                        .state
                        .update(|d| d.accounts.insert(id.clone(), AccountRecord::default()))
                        .map_err(unavailable_write)?;
                    info!("account set up", "account_id" => id);
                }
                Some(account)
                    if !account.peer_ledger_account.is_empty()
                        || inner.exchanges.contains_key(&id) =>
                {
                    return Ok(Response::new(SetupAccountResponse {}));
                }
                Some(_) => {}
            }
            if adaptor.engine.is_none() {
                warning!("no engine (ILP_HOST_ENGINE_ADDR unset): waiting for the peer to send its ledger account", "account_id" => id);
                return Ok(Response::new(SetupAccountResponse {}));
            }
        }
        // The peer may not be reachable yet (its host still starting): the account is set up
        // all the same, and the exchange goes on in the background.
        if let Err(e) = adaptor.exchange_once(&id).await {
            warning!("ledger account exchange failed: retrying in the background", "account_id" => id, "error" => e);
            let mut inner = adaptor.lock();
            let pending = inner
                .state
                .data()
                .accounts
                .get(&id)
                .is_some_and(|a| a.peer_ledger_account.is_empty());
            if pending {
                adaptor.start_exchange_locked(&mut inner, &id);
            }
        }
        Ok(Response::new(SetupAccountResponse {}))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        let id = request.into_inner().account_id;
        validate::account_id(&id).map_err(Status::invalid_argument)?;
        let mut inner = self.0.lock();
        if let Some(running) = inner.exchanges.remove(&id) {
            running.abort();
        }
        if inner.state.data().accounts.contains_key(&id) {
            inner
                .state
                .update(|d| d.accounts.remove(&id))
                .map_err(unavailable_write)?;
            info!("account deleted", "account_id" => id);
        }
        Ok(Response::new(DeleteAccountResponse {}))
    }

    async fn send_money(
        &self,
        request: Request<SendMoneyRequest>,
    ) -> Result<Response<SendMoneyResponse>, Status> {
        let SendMoneyRequest {
            account_id: id,
            amount: value,
            idempotency_key: key,
        } = request.into_inner();
        validate::account_id(&id).map_err(Status::invalid_argument)?;
        validate::idempotency_key(&key).map_err(Status::invalid_argument)?;
        let adaptor = &self.0;
        let Some(asset) = adaptor.asset() else {
            return Err(Status::unavailable(
                "the ledger has not answered yet, so its scale is unknown: retry",
            ));
        };
        validate::payment(value.as_ref(), asset.scale).map_err(Status::invalid_argument)?;
        let value = value.unwrap_or_default();
        let key_lock = adaptor.key_lock(&key);
        let _held = key_lock.lock().await;
        let payment = adaptor.record_payment(&id, &key, &value)?;
        if payment.completed {
            return Ok(completed(&payment));
        }
        let transfer = TransferRequest {
            transfer_id: payment.settlement_id.clone(),
            from_account_id: adaptor.cfg.ledger_account.clone(),
            to_account_id: payment.to.clone(),
            amount: Some(amount(&payment.value, payment.scale)),
            memo: adaptor.cfg.ledger_account.clone(),
        };
        let outcome = tokio::time::timeout(
            LEDGER_CALL_TIMEOUT,
            adaptor.ledger.clone().transfer(transfer),
        )
        .await;
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(refusal)) => return Err(adaptor.transfer_failed(&key, &payment, &refusal)),
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "the ledger did not confirm transfer {:?} in time: outcome unknown, retry with the same key",
                    payment.settlement_id
                )))
            }
        }
        let written = adaptor.lock().state.update(|d| {
            if let Some(record) = d.payments.get_mut(&key) {
                record.completed = true;
            }
        });
        if let Err(e) = written {
            // Paid, but not recorded as such: the retry with the same key finds the transfer.
            return Err(Status::unavailable(format!(
                "paid, but cannot write the state file ({e}): retry with the same key"
            )));
        }
        info!("settlement sent", "settlement_id" => payment.settlement_id, "account_id" => id,
            "to" => payment.to, "amount" => payment.value);
        Ok(completed(&payment))
    }

    async fn receive_money(
        &self,
        request: Request<ReceiveMoneyRequest>,
    ) -> Result<Response<ReceiveMoneyResponse>, Status> {
        let id = request.into_inner().settlement_id;
        validate::settlement_id(&id).map_err(Status::invalid_argument)?;
        let mut inner = self.0.lock();
        let reported = inner
            .state
            .data()
            .incoming
            .iter()
            .find(|r| r.transfer_id == id && !r.account_id.is_empty())
            .cloned();
        let Some(record) = reported else {
            return Err(Status::not_found(format!(
                "settlement_id {:?}: no such incoming settlement was reported",
                validate::clip(&id)
            )));
        };
        if !record.acknowledged {
            inner
                .state
                .update(|d: &mut StateData| {
                    if let Some(r) = d.incoming_mut(&id) {
                        r.acknowledged = true;
                    }
                })
                .map_err(unavailable_write)?;
            info!("incoming settlement acknowledged", "settlement_id" => id,
                "account_id" => record.account_id, "amount" => record.value);
        }
        Ok(Response::new(ReceiveMoneyResponse {}))
    }

    async fn receive_data(
        &self,
        request: Request<ReceiveDataRequest>,
    ) -> Result<Response<ReceiveDataResponse>, Status> {
        let ReceiveDataRequest {
            account_id: id,
            data,
        } = request.into_inner();
        validate::account_id(&id).map_err(Status::invalid_argument)?;
        if data.len() > validate::MAX_DATA_BYTES {
            return Err(Status::invalid_argument(format!(
                "data is {} bytes: at most {}",
                data.len(),
                validate::MAX_DATA_BYTES
            )));
        }
        let adaptor = &self.0;
        let theirs = peer::parse_request(&data, &adaptor.cfg.ledger_account)
            .map_err(Status::invalid_argument)?;
        {
            let mut inner = adaptor.lock();
            adaptor.record_peer_locked(&mut inner, &id, &theirs)?;
        }
        Ok(Response::new(ReceiveDataResponse {
            data: peer::ledger_account_reply(&adaptor.cfg.ledger_account),
        }))
    }

    async fn get_balance(
        &self,
        _: Request<GetBalanceRequest>,
    ) -> Result<Response<GetBalanceResponse>, Status> {
        let adaptor = &self.0;
        let request = GetAccountRequest {
            account_id: adaptor.cfg.ledger_account.clone(),
        };
        match tokio::time::timeout(
            LEDGER_CALL_TIMEOUT,
            adaptor.ledger.clone().get_account(request),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(Response::new(GetBalanceResponse {
                balance: answer.into_inner().account.and_then(|a| a.balance),
            })),
            Ok(Err(status)) => Err(Status::unavailable(format!(
                "the ledger did not give the balance of {:?}: {}",
                adaptor.cfg.ledger_account,
                status.message()
            ))),
            Err(_) => Err(Status::unavailable(
                "the ledger did not give the balance in time",
            )),
        }
    }

    type WatchEventsStream = ReceiverStream<Result<WatchEventsResponse, Status>>;

    /// Starts with the current state of every connection (one event each), then re-delivers
    /// every unacknowledged incoming settlement in ledger order, then follows live events. The
    /// response headers go out at once, before any event.
    async fn watch_events(
        &self,
        _: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let adaptor = Arc::clone(&self.0);
        let (backlog, mut live) = {
            let inner = adaptor.lock();
            let mut backlog = vec![connection_event(&inner.link)];
            backlog.extend(inner.state.data().unacknowledged().map(incoming_event));
            (backlog, adaptor.events.subscribe())
        };
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            for event in backlog {
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let event = tokio::select! {
                    event = live.recv() => event,
                    _ = adaptor.stop.cancelled() => return,
                    _ = sender.closed() => return,
                };
                let item = match event {
                    Ok(event) => Ok(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => Err(Status::unavailable(
                        "this event stream fell behind and was ended: reopen it (unacknowledged settlements are re-delivered)",
                    )),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let end = item.is_err();
                if sender.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
