//! Broker start-up and shutdown.
//!
//! Start: bind the listeners (so port 0 resolves and both addresses are
//! printed at once), serve the admin endpoints (not ready yet), open the
//! metadata quorum, register this broker, probe the tier, recover every local
//! partition, then accept Kafka connections and report ready.
//!
//! Shutdown (SIGTERM/SIGINT) is ordered and infallible: stop accepting and
//! let in-flight requests finish (bounded), stop background tasks, flush and
//! close every partition, stop raft.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::metadata::{BrokerInfo, Command, Metadata, Quorum};
use crate::server;

/// Runs a broker until SIGTERM or SIGINT.
pub async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    // A write past the file-size limit (RLIMIT_FSIZE) must fail with an
    // error like a full disk, not kill the process: take SIGXFSZ over.
    let _xfsz =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
            .context("cannot handle SIGXFSZ")?;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        signal_token.cancel();
    });
    serve_until(config, shutdown).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What clients of a listener bound at `bound` are told: the advertised
/// address (port 0: the bound port), else the bound address (127.0.0.1
/// for an unspecified one, with a warning).
fn advertised_address(
    advertised: Option<&(String, u16)>,
    bound: std::net::SocketAddr,
) -> (String, u16) {
    match advertised {
        Some((h, p)) => (h.clone(), if *p == 0 { bound.port() } else { *p }),
        None => {
            let ip = bound.ip();
            let host = if ip.is_unspecified() {
                tracing::warn!(%bound, "listening on an unspecified address; advertising 127.0.0.1 (set --advertised-listeners)");
                "127.0.0.1".to_string()
            } else {
                ip.to_string()
            };
            (host, bound.port())
        }
    }
}

/// How this broker connects to the others' inter-broker listener: its
/// client properties, whose protocol must be that listener's.
fn inter_broker_client(config: &BrokerConfig) -> anyhow::Result<crate::client::Security> {
    let listener = config.security.inter_broker();
    let Some(path) = &config.security.inter_broker_client_config else {
        return Ok(crate::client::Security::default());
    };
    let props = crate::client::read_properties(path)
        .with_context(|| format!("inter-broker-client-config={}", path.display()))?;
    let security = crate::client::Security::from_properties(&props)
        .with_context(|| format!("inter-broker-client-config={}", path.display()))?;
    if security.tls.is_some() != listener.protocol.tls()
        || security.sasl.is_some() != listener.protocol.sasl()
    {
        anyhow::bail!(
            "security.protocol in inter-broker-client-config={} must be {}, the protocol of the inter-broker listener {}",
            path.display(),
            listener.protocol.name(),
            listener.name
        );
    }
    Ok(security)
}

/// What can be reloaded: the TLS files and the SASL users.
#[derive(Clone)]
enum Reloadable {
    Tls(Arc<crate::security::tls::Tls>),
    Sasl(Arc<crate::security::sasl::Sasl>),
}

/// The listeners as connections see them, with the TLS files and SASL
/// users loaded (an error names the file); the second value lists what
/// SIGHUP reloads.
fn load_security(
    config: &BrokerConfig,
) -> anyhow::Result<(Vec<Arc<crate::security::Listener>>, Vec<Reloadable>)> {
    use crate::security::{sasl::Sasl, tls::Tls, Listener};
    let s = &config.security;
    let tls = s.tls.clone().map(Tls::load).transpose()?.map(Arc::new);
    let any_sasl = s.listeners.iter().any(|l| l.protocol.sasl());
    let sasl = any_sasl
        .then(|| Sasl::load(s.sasl.clone()))
        .transpose()?
        .map(Arc::new);
    let listeners = s
        .listeners
        .iter()
        .map(|l| {
            Arc::new(Listener {
                name: l.name.clone(),
                protocol: l.protocol,
                tls: if l.protocol.tls() { tls.clone() } else { None },
                sasl: if l.protocol.sasl() {
                    sasl.clone()
                } else {
                    None
                },
            })
        })
        .collect();
    let reloadable = tls
        .map(Reloadable::Tls)
        .into_iter()
        .chain(sasl.map(Reloadable::Sasl))
        .collect();
    Ok((listeners, reloadable))
}

/// Rereads the TLS files and the SASL users on each SIGHUP; what fails to
/// load keeps the previous contents.
async fn reload_on_sighup(what: Vec<Reloadable>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP; certificates and users are not reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        for r in &what {
            let (name, result) = match r {
                Reloadable::Tls(t) => ("TLS certificate and key", t.reload()),
                Reloadable::Sasl(s) => ("SASL users", s.reload()),
            };
            match result {
                Ok(()) => tracing::info!("{name} reloaded (SIGHUP)"),
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "cannot reload the {name}; the previous ones stay in force"
                    )
                }
            }
        }
    }
}

/// Runs a broker until `shutdown` is cancelled.
pub async fn serve_until(
    mut config: BrokerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir. path={}", config.data_dir.display()))?;
    let (security, reloadable) = load_security(&config)?;
    let admin_tls = config
        .admin_ssl
        .then(|| {
            reloadable.iter().find_map(|r| match r {
                Reloadable::Tls(t) => Some(t.clone()),
                Reloadable::Sasl(_) => None,
            })
        })
        .flatten();
    let inter_broker_security = inter_broker_client(&config)?;
    let mut kafka_listeners = Vec::new();
    for (spec, listener) in config.security.listeners.iter().zip(&security) {
        let socket = server::bind_kafka(spec.addr, config.tcp_congestion_control.as_deref())
            .with_context(|| {
                format!(
                    "cannot bind kafka listener. listeners={}://{}",
                    spec.name, spec.addr
                )
            })?;
        kafka_listeners.push((socket, listener.clone()));
    }
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot bind admin listener. admin-listen={}",
                config.admin_listen
            )
        })?;
    let kafka_addr = kafka_listeners[config.security.inter_broker]
        .0
        .local_addr()
        .context("kafka listener address")?;
    let admin_addr = admin_listener
        .local_addr()
        .context("admin listener address")?;
    println!("kafka listener bound to {kafka_addr}");
    let mut endpoints = Vec::new();
    for ((socket, listener), spec) in kafka_listeners.iter().zip(&config.security.listeners) {
        let bound = socket.local_addr().context("kafka listener address")?;
        println!(
            "listener {} ({}) bound to {bound}",
            listener.name,
            listener.protocol.name()
        );
        let (host, port) = advertised_address(spec.advertised.as_ref(), bound);
        endpoints.push(crate::metadata::Endpoint {
            listener: listener.name.clone(),
            host,
            port: i32::from(port),
        });
    }
    if !reloadable.is_empty() {
        tokio::spawn(reload_on_sighup(reloadable));
    }
    println!("admin listener bound to {admin_addr}");
    tracing::info!(%kafka_addr, %admin_addr, data_dir = %config.data_dir.display(), "strata starting");
    let open_files_limit = raise_open_files_limit();
    config.max_open_segment_files =
        budget_segment_files(config.max_open_segment_files, open_files_limit);

    let admin_state = server::admin::AdminState::default();
    let admin_task = tokio::spawn(server::admin::run(
        admin_listener,
        admin_tls,
        admin_state.clone(),
        shutdown.child_token(),
    ));

    let inter_broker = &endpoints[config.security.inter_broker];
    let advertised = (inter_broker.host.clone(), inter_broker.port);

    let quorum = match &config.controller {
        None => Quorum::Alone {
            raft_addr: kafka_addr.to_string(),
        },
        Some(c) => {
            let listener = TcpListener::bind(c.listen).await.with_context(|| {
                format!(
                    "cannot bind controller listener. controller-listen={}",
                    c.listen
                )
            })?;
            tracing::info!(controller_addr = %c.listen, voters = ?c.voters, "serving the controller listener");
            let tls = match (&config.security.tls, c.tls) {
                (Some(files), true) => Some(crate::security::tls::controller(files)?),
                _ => None,
            };
            Quorum::Voters {
                voters: c
                    .voters
                    .iter()
                    .map(|(id, addr)| (*id as u64, addr.clone()))
                    .collect(),
                listener,
                tls,
            }
        }
    };
    // Joining a quorum waits for its other voters as long as they take; a
    // signal meanwhile stops the broker.
    let metadata_dir = config.data_dir.join("__cluster_metadata");
    let metadata = tokio::select! {
        opened = Metadata::open_quorum(
            &metadata_dir,
            config.node_id as u64,
            quorum,
        ) => opened.context("cannot open cluster metadata")?,
        _ = shutdown.cancelled() => {
            tracing::info!("stopped while waiting for the metadata quorum");
            return Ok(());
        }
    };
    // Everything below reads the view (registration, the leaderships to
    // hand over, the partitions to open and their roles): it must be the
    // cluster's current one, not the one this node applied before it
    // stopped. /ready stays false until then.
    if let Err(e) = metadata.wait_caught_up(&shutdown).await {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        return Err(e).context("cannot catch up with the metadata log");
    }
    let me = BrokerInfo {
        node_id: config.node_id,
        host: advertised.0.clone(),
        port: advertised.1,
        rack: None,
        listeners: endpoints,
    };
    if metadata.view().brokers.get(&config.node_id) != Some(&me) {
        metadata
            .propose(Command::RegisterBroker(me.clone()))
            .await
            .context("cannot register broker in metadata")?;
    }

    let tier_options = config.tier_options();
    let tier = tiering::TierStore::from_url_with(&config.tier_url, tier_options)
        .with_context(|| format!("invalid tier settings. tier-url={}", config.tier_url))?;
    // The broker starts and serves its local data with the tier down: uploads
    // queue and retry, tiered reads answer an error, /ready names the tier.
    let first_probe = probe_tier(&tier, config.node_id).await;
    if let Err(why) = &first_probe {
        tracing::error!(tier_url = %tier.url(), error = %why, "tier is unusable; serving local data, uploads wait and tiered reads answer an error until it answers");
    }

    let tables = config.table_store(&tier).with_context(|| {
        format!(
            "invalid table settings. table-url={}",
            config.table_url.as_deref().unwrap_or_default()
        )
    })?;
    if let Some(url) = &config.table_url {
        if let Err(why) = probe_tier(&tables, config.node_id).await {
            tracing::error!(table_url = %url, error = %why, "table store is unusable; table exports fail and are tried again until it answers");
        }
    }

    let mut broker = Broker::new(config.clone(), metadata, tier, me);
    broker.tables = tables;
    broker.inter_broker_security = inter_broker_security;
    let broker = Arc::new(broker);
    broker.fetchers.attach(&broker);
    broker.set_tier_down(first_probe.err());
    // Replicated partitions this broker led before it stopped get a new
    // leader epoch: what it lost with its page cache must not pass for the
    // same epoch's records that its followers hold. A broker that shut
    // down cleanly says it is back, so its fence can lift.
    let me = config.node_id;
    let led_replicated = broker.view().topics.values().any(|t| {
        t.partitions
            .iter()
            .any(|p| p.leader == me && p.replicas.len() > 1)
    });
    if led_replicated || broker.view().shut_down.contains(&me) {
        broker
            .metadata
            .propose(Command::BrokerStarted { node_id: me })
            .await
            .context("cannot hand over the replicated partitions this broker led")?;
    }
    admin_state.set_broker(broker.clone());
    broker
        .remove_orphan_dirs()
        .context("cannot scan data dir")?;
    // Subscribed before the first reconciliation: a change that lands
    // while it runs must reconcile again.
    let metadata_changes = broker.metadata.subscribe();
    broker.reconcile().await.context("cannot open partitions")?;
    tracing::info!(
        partitions = broker.all_partitions().len(),
        "log recovery done"
    );
    let groups = broker
        .groups
        .load(&*broker)
        .await
        .context("cannot load consumer groups from __consumer_offsets")?;
    tracing::info!(
        groups = groups.groups,
        offsets = groups.offsets,
        records = groups.records,
        "consumer groups loaded"
    );

    let tasks = tokio_util::task::TaskTracker::new();
    let uploader_token = CancellationToken::new();
    let uploader = tiering::Uploader::start(
        &broker.tier,
        tiering::UploaderConfig {
            max_concurrent: config.tier.upload_concurrency,
            bytes_per_sec: config.tier.upload_bytes_per_sec,
            max_attempts: 0,
            ..Default::default()
        },
        uploader_token.clone(),
    );
    tasks.spawn(crate::broker::tier::run(
        broker.clone(),
        uploader.clone(),
        shutdown.child_token(),
    ));
    if let Some(source) = config.tier.read_replica_of.clone() {
        tasks.spawn(crate::broker::read_replica::run(
            broker.clone(),
            source,
            shutdown.child_token(),
        ));
    }
    tasks.spawn(crate::broker::scrub::run(
        broker.clone(),
        shutdown.child_token(),
    ));
    tasks.spawn(crate::group::run_timers(
        broker.clone(),
        shutdown.child_token(),
    ));
    tasks.spawn(crate::txn::coordinator::run_timers(
        broker.clone(),
        shutdown.child_token(),
    ));
    tasks.spawn(watch_metadata(
        broker.clone(),
        metadata_changes,
        shutdown.child_token(),
    ));
    tasks.spawn(reprobe_tier(broker.clone(), shutdown.child_token()));
    tasks.spawn({
        let (broker, cancel) = (broker.clone(), shutdown.child_token());
        async move { broker.metadata.keep_running(cancel).await }
    });
    tasks.spawn({
        let (broker, cancel) = (broker.clone(), shutdown.child_token());
        let session = Duration::from_millis(config.broker_session_timeout_ms);
        async move { broker.metadata.watch_brokers(session, cancel).await }
    });
    tasks.spawn(retention_loop(broker.clone(), shutdown.child_token()));
    tasks.spawn(cleaner_loop(broker.clone(), shutdown.child_token()));
    tasks.spawn(crate::broker::tier_compaction::run(
        broker.clone(),
        shutdown.child_token(),
    ));
    tasks.spawn(crate::broker::table_export::run(
        broker.clone(),
        uploader.clone(),
        shutdown.child_token(),
    ));
    tasks.spawn(rebalance_leaders(broker.clone(), shutdown.child_token()));
    tasks.spawn(checkpoint_loop(broker.clone(), shutdown.child_token()));
    tasks.spawn(crate::broker::replication::run_isr_updates(
        broker.clone(),
        shutdown.child_token(),
    ));
    let server_task = tokio::spawn(server::run(
        broker.clone(),
        kafka_listeners,
        shutdown.child_token(),
    ));
    broker.set_ready();
    tracing::info!("strata ready");

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    controlled_shutdown(&broker).await;
    // Parked JoinGroup/SyncGroup requests would hold the listener's drain.
    broker.groups.shutdown();
    broker.txns.shutdown();
    broker.fetchers.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(15), server_task).await;
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    // Active segments are sealed and uploaded (bounded); without that,
    // uploads in flight get a few seconds. What is left is offered again
    // at the next start (only the manifest makes an upload count).
    match broker.config.tier.shutdown_upload_timeout_ms {
        0 => uploader.shutdown(Duration::from_secs(5)).await,
        ms => {
            crate::broker::tier::upload_on_shutdown(&broker, &uploader, Duration::from_millis(ms))
                .await
        }
    }
    uploader_token.cancel();
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || {
        b.close_all();
        b.checkpoint_high_watermarks();
    })
    .await;
    if let Err(e) = broker.metadata.shutdown().await {
        tracing::warn!(error = %e, "metadata shutdown failed");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    tracing::info!("strata stopped");
    Ok(())
}

/// Longest a clean shutdown waits for the quorum to take its leaderships.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker in a cluster that leads replicated partitions hands them over
/// before it stops (Kafka's controlled shutdown): the controller moves each
/// to another live in-sync replica, and this broker's partitions follow
/// (requests waiting on them answer NOT_LEADER_OR_FOLLOWER, and clients go
/// to the new leaders) instead of staying leaderless until its session
/// times out. Heartbeats have stopped already, so the fence holds.
async fn controlled_shutdown(broker: &Arc<Broker>) {
    let me = broker.node_id();
    let view = broker.view();
    let leads_replicated = view.topics.values().any(|t| {
        t.partitions
            .iter()
            .any(|p| p.leader == me && p.replicas.len() > 1)
    });
    if !leads_replicated || view.brokers.len() < 2 {
        return;
    }
    let proposed = tokio::time::timeout(
        CONTROLLED_SHUTDOWN_TIMEOUT,
        broker
            .metadata
            .propose(Command::ControlledShutdown { node_id: me }),
    )
    .await;
    match proposed {
        Ok(Ok(_)) => {
            if let Err(e) = broker.reconcile().await {
                tracing::warn!(error = %e, "reconcile after handing over leaderships failed");
            }
            tracing::info!("controlled shutdown: leaderships handed over");
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "controlled shutdown refused; leaderships move when the session times out");
        }
        Err(_) => {
            tracing::warn!(
                wait_ms = CONTROLLED_SHUTDOWN_TIMEOUT.as_millis() as u64,
                "controlled shutdown not committed in time; leaderships move when the session times out"
            );
        }
    }
}

/// Keeps local partitions in line with metadata changes.
async fn watch_metadata(
    broker: Arc<Broker>,
    mut rx: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Err(e) = broker.reconcile().await {
                    tracing::warn!(error = %e, "reconcile after metadata change failed");
                }
            }
        }
    }
}

/// How often the high-watermark checkpoint is brought up to date
/// (Kafka's `replica.high.watermark.checkpoint.interval.ms`).
const HWM_CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Keeps the high-watermark checkpoint up to date.
async fn checkpoint_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HWM_CHECKPOINT_EVERY) => {
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || b.checkpoint_high_watermarks()).await;
            }
        }
    }
}

/// On the metadata leader, every `--leader-imbalance-check-interval-ms`:
/// moves leaderships back to their preferred replicas where a broker's
/// share held by others is above `--leader-imbalance-per-broker-percentage`
/// (Kafka's auto.leader.rebalance), so leaders spread again after brokers
/// restart.
async fn rebalance_leaders(broker: Arc<Broker>, shutdown: CancellationToken) {
    if !broker.config.auto_leader_rebalance_enable {
        return;
    }
    let every = Duration::from_millis(broker.config.leader_imbalance_check_interval_ms);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !broker.metadata.is_leader() {
            continue;
        }
        let due = broker
            .view()
            .imbalanced_leaders(broker.config.leader_imbalance_per_broker_percentage);
        if due.is_empty() {
            continue;
        }
        let cmd = Command::ElectLeaders {
            election: crate::metadata::Election::Preferred,
            partitions: due,
        };
        match broker.metadata.propose(cmd).await {
            Ok(crate::metadata::CommandResult::Elections { outcomes }) => {
                let moved = outcomes
                    .iter()
                    .filter(|o| **o == crate::metadata::ElectionOutcome::Elected)
                    .count();
                tracing::info!(moved, "leaderships moved back to their preferred replicas");
            }
            Ok(other) => tracing::warn!(result = ?other, "leader rebalance refused"),
            Err(e) => tracing::warn!(error = %e, "leader rebalance failed"),
        }
    }
}

/// Applies retention every `log.retention.check.interval.ms`.
async fn retention_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let every = Duration::from_millis(broker.config.log_retention_check_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || b.apply_retention()).await;
            }
        }
    }
}

/// Runs the log cleaner: a round, then `log.cleaner.backoff.ms` of sleep
/// when no pass replaced anything (at once again otherwise).
async fn cleaner_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let settings = broker.cleaner_settings();
        let b = broker.clone();
        let swapped = tokio::task::spawn_blocking(move || b.clean_logs(settings))
            .await
            .unwrap_or(0);
        if swapped > 0 {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(settings.backoff_ms)) => {}
        }
    }
}

/// How long one tier probe may take, and how often a down tier is probed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const REPROBE_EVERY: Duration = Duration::from_secs(5);

/// Writes, reads back and deletes a probe object; `Err` says why the tier
/// is unusable.
async fn probe_tier(tier: &tiering::TierStore, node_id: i32) -> Result<(), String> {
    let unique = format!("node-{node_id}-{}", uuid::Uuid::new_v4().simple());
    match tokio::time::timeout(PROBE_TIMEOUT, tier.probe(&unique)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(tiering::error_chain(&e)),
        Err(_) => Err(format!(
            "the object store did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Probes a tier that was down until it answers, then says so once.
async fn reprobe_tier(broker: Arc<Broker>, shutdown: CancellationToken) {
    while broker.tier_down().is_some() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REPROBE_EVERY) => {}
        }
        match probe_tier(&broker.tier, broker.node_id()).await {
            Ok(()) => {
                tracing::info!(tier_url = %broker.tier.url(), "tier answers again");
                broker.set_tier_down(None);
            }
            Err(why) => broker.set_tier_down(Some(why)),
        }
    }
}

/// Raises the soft limit on open files to the hard one: segment files
/// need descriptors (up to `--max-open-segment-files`), so thousands of
/// partitions need more than the usual soft default (1,024). Returns and
/// logs the limit (None: unlimited).
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = match (limit.current, limit.maximum) {
        (Some(current), maximum) if maximum.is_none_or(|m| m > current) => {
            let new = Rlimit {
                current: maximum,
                maximum,
            };
            match setrlimit(Resource::Nofile, new) {
                Ok(()) => maximum,
                Err(e) => {
                    tracing::warn!(current, error = %e, "cannot raise the open files limit");
                    Some(current)
                }
            }
        }
        (current, _) => current,
    };
    match raised {
        Some(n) => tracing::info!(open_files_limit = n, "open files limit"),
        None => tracing::info!("open files limit: unlimited"),
    }
    raised
}

/// How many segment files stay open: `configured`, else half the open
/// files limit (the other half for connections, the tier's cache and
/// checkpoints); None: unbounded.
fn budget_segment_files(configured: Option<u64>, open_files_limit: Option<u64>) -> Option<u64> {
    let budget = configured.or(open_files_limit.map(|n| (n / 2).max(1)));
    if let (Some(budget), Some(limit)) = (configured, open_files_limit) {
        if budget >= limit {
            tracing::warn!(
                max_open_segment_files = budget,
                open_files_limit = limit,
                "max-open-segment-files is not below the open files limit: \
                 connections may find no descriptor left"
            );
        }
    }
    tracing::info!(
        max_open_segment_files = budget,
        "segment files open at once at most (the least recently used close)"
    );
    budget
}
