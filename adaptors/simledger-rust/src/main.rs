//! simledger-rust: a ledger adaptor for the simulated ledger (`python -m host.simledger`), in
//! Rust with tonic, written from docs/protocol.md and the `.proto` files. The host starts it;
//! it refuses to run by hand (no magic cookie).

mod adaptor;
mod backoff;
mod config;
mod connectivity;
mod contract;
mod log;
mod pb;
mod peer;
mod server;
mod state;
mod tls;
mod validate;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::log::{error, info, warning};
use crate::pb::plugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::pb::plugin::Empty;

/// How long the server may take to finish its calls once asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often the parent process is looked at: when it changes, the host is gone.
const PARENT_POLL: Duration = Duration::from_secs(1);

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn main() -> ExitCode {
    log::init(
        env(contract::ENV_ADAPTOR_NAME)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| adaptor::NAME.into()),
    );
    if env(contract::MAGIC_COOKIE_KEY).as_deref() != Some(contract::MAGIC_COOKIE_VALUE) {
        eprintln!(
            "This is a ledger adaptor of the Interledger settlement host: the host starts it.\n\
             It does not run by hand ({} is not set as the host sets it).",
            contract::MAGIC_COOKIE_KEY
        );
        return ExitCode::from(1);
    }
    let version = match contract::negotiate(env(contract::ENV_PROTOCOL_VERSIONS).as_deref()) {
        Ok(version) => version,
        Err(problem) => {
            eprintln!("{problem}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the runtime", "error" => e);
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(version)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            error!("cannot start", "error" => problem);
            ExitCode::from(1)
        }
    }
}

async fn run(version: u32) -> Result<(), String> {
    let cfg = config::Config::from_env(env)?;
    let stop = CancellationToken::new();
    // Subscribed before the handshake line: SIGINT is ignored (a Ctrl-C in the operator's
    // terminal reaches the whole group; the host decides the order of shutdown).
    let mut terms = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupts = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let tls = match env(contract::ENV_CLIENT_CERT).filter(|pem| !pem.is_empty()) {
        Some(pem) => {
            let host = tls::certificate_from_pem(&pem)
                .map_err(|e| format!("{}: {e}", contract::ENV_CLIENT_CERT))?;
            let (own, key) = tls::generate(tls::algorithm_for(&host))?;
            Some((tls::server_config(own.clone(), key, host)?, own))
        }
        None => None,
    };
    let adaptor = adaptor::Adaptor::start(cfg, stop.clone())?;
    let listener = server::Listener::open(env)?;
    let address = listener.address()?;

    let (mut health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("plugin", ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(
            pb::adaptor::ledger_adaptor_server::LedgerAdaptorServer::new(adaptor::Service(
                Arc::clone(&adaptor),
            )),
        )
        .add_service(GrpcControllerServer::new(Controller(stop.clone())));
    let serving = {
        let stop = stop.clone();
        let config = tls.as_ref().map(|(config, _)| Arc::clone(config));
        tokio::spawn(listener.serve(router, config, async move { stop.cancelled().await }))
    };
    server::announce(&address, tls.is_some());
    let line =
        contract::handshake_line(version, &address, tls.as_ref().map(|(_, own)| own.as_ref()));
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot print the handshake: {e}"))?;
    }

    let parent = std::os::unix::process::parent_id();
    let mut parent_poll = tokio::time::interval(PARENT_POLL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => { info!("Shutdown requested: stopping"); break; }
            _ = terms.recv() => { info!("SIGTERM: stopping"); break; }
            _ = interrupts.recv() => {}
            _ = parent_poll.tick() => {
                if std::os::unix::process::parent_id() != parent {
                    warning!("the host process is gone: stopping", "parent_pid" => parent);
                    break;
                }
            }
        }
    }
    health
        .set_service_status("plugin", ServingStatus::NotServing)
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    stop.cancel();
    // Every state change is on disk before it is acknowledged: a server that does not finish
    // in time loses nothing by being left.
    match tokio::time::timeout(STOP_GRACE, serving).await {
        Ok(Ok(Ok(()))) => info!("stopped"),
        Ok(Ok(Err(e))) => warning!("the server ended with an error", "error" => e),
        Ok(Err(e)) => warning!("the server task failed", "error" => e),
        Err(_) => {
            warning!("the server did not stop in time: exiting", "after_s" => STOP_GRACE.as_secs())
        }
    }
    Ok(())
}

/// `plugin.GRPCController`: Shutdown answers, then the adaptor stops.
struct Controller(CancellationToken);

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        let stop = self.0.clone();
        // A moment for the answer to go out before the server stops taking calls.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        Ok(Response::new(Empty {}))
    }
}
