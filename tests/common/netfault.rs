//! Network faults between the nodes of a test cluster, without root: a fault-injecting TCP
//! proxy in front of every node's broker and controller listener.
//!
//! Each node advertises its proxies (its broker address in metadata, its controller address in
//! the quorum), so every connection to a node — from another node or from a client — passes
//! through the proxy in front of it. Each node's own connections come from its own loopback
//! address (`--source-address 127.0.1.<id>`), so a proxy knows which node a connection is from;
//! anything else is [`End::Client`]. A rule applies per direction: bytes from `from` to `to`.
//!
//! - [`Fault::Cut`]: connections are closed at once and new ones refused (a REJECT rule, or a
//!   broken link that the peers notice).
//! - [`Fault::Blackhole`]: bytes are held, never delivered while the rule stands (a DROP rule:
//!   the sender notices only by its own timeouts); when it is lifted, held bytes flow again,
//!   as TCP retransmits after a short partition.
//! - [`Fault::Delay`]: every chunk is delivered that much later, in order.
//!
//! The proxies run on a runtime of their own (two threads), so a test that blocks its own
//! runtime does not stall the network.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum End {
    /// A node, by id.
    Node(u64),
    /// Anything that is not a node: the test, a producer, the CLI.
    Client,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Node(id) => write!(f, "node {id}"),
            End::Client => write!(f, "clients"),
        }
    }
}

/// What happens to bytes in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Connections closed and refused.
    Cut,
    /// Bytes held, not delivered, until the rule is lifted.
    Blackhole,
    /// Bytes delivered this much later.
    Delay(Duration),
}

/// The loopback address node `id`'s own connections come from.
pub fn source_address(id: u64) -> IpAddr {
    assert!((1..=254).contains(&id), "node ids 1..=254 only");
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, id as u8))
}

fn end_of(peer: SocketAddr) -> End {
    match peer.ip() {
        IpAddr::V4(ip) if ip.octets()[..3] == [127, 0, 1] && ip.octets()[3] != 0 => {
            End::Node(u64::from(ip.octets()[3]))
        }
        _ => End::Client,
    }
}

#[derive(Default)]
struct Rules {
    faults: HashMap<(End, End), Fault>,
}

/// The proxies and their rules. Dropping it stops every proxy and closes their connections.
pub struct Network {
    rules: Arc<Mutex<Rules>>,
    changed: watch::Sender<u64>,
    runtime: Option<tokio::runtime::Runtime>,
    nodes: Vec<u64>,
    started: Instant,
    /// Every change, with its time since the network started: the fault timeline.
    log: Mutex<Vec<String>>,
}

impl Network {
    /// A network over nodes `nodes`, with no proxy yet.
    pub fn new(nodes: Vec<u64>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("netfault")
            .enable_all()
            .build()
            .expect("the proxy runtime");
        Self {
            rules: Arc::default(),
            changed: watch::channel(0).0,
            runtime: Some(runtime),
            nodes,
            started: Instant::now(),
            log: Mutex::default(),
        }
    }

    /// Starts a proxy on 127.0.0.1:`listen` in front of node `node`'s listener at `upstream`.
    pub fn proxy(&self, node: u64, listen: u16, upstream: SocketAddr) {
        let runtime = self.runtime.as_ref().unwrap();
        // Bound here, so the port is taken before the nodes start; served on the proxy runtime.
        let listener = std::net::TcpListener::bind(("127.0.0.1", listen))
            .unwrap_or_else(|e| panic!("binding proxy port {listen}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let rules = Arc::clone(&self.rules);
        let changed = self.changed.subscribe();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("a tokio listener");
            loop {
                let Ok((client, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let from = end_of(peer);
                let link = Link {
                    from,
                    to: End::Node(node),
                    rules: Arc::clone(&rules),
                    changed: changed.clone(),
                };
                tokio::spawn(link.serve(client, upstream));
            }
        });
    }

    /// Sets (or with `None`, lifts) the rule for bytes from `from` to `to`.
    pub fn set(&self, from: End, to: End, fault: Option<Fault>) {
        {
            let mut rules = self.rules.lock().unwrap();
            match fault {
                Some(f) => rules.faults.insert((from, to), f),
                None => rules.faults.remove(&(from, to)),
            };
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Both directions between `a` and `b`.
    pub fn set_both(&self, a: End, b: End, fault: Option<Fault>) {
        self.set(a, b, fault);
        self.set(b, a, fault);
    }

    /// Cuts node `id` off from every other node and from clients, both ways, with `fault`.
    pub fn isolate(&self, id: u64, fault: Fault) {
        for other in self.others(id) {
            self.set_both(End::Node(id), other, Some(fault));
        }
        self.note(format!("isolate node {id} ({fault:?})"));
    }

    /// Splits the nodes into `a` and the rest (clients stay with `a`), both ways.
    pub fn partition(&self, a: &[u64], fault: Fault) {
        let b: Vec<u64> = self
            .nodes
            .iter()
            .copied()
            .filter(|n| !a.contains(n))
            .collect();
        for x in a {
            for y in &b {
                self.set_both(End::Node(*x), End::Node(*y), Some(fault));
            }
        }
        for y in &b {
            self.set_both(End::Node(*y), End::Client, Some(fault));
        }
        self.note(format!("partition {a:?} | {b:?} ({fault:?})"));
    }

    /// Lifts every rule.
    pub fn heal(&self) {
        self.rules.lock().unwrap().faults.clear();
        self.changed.send_modify(|n| *n += 1);
        self.note("heal".to_string());
    }

    /// The timeline of changes so far.
    pub fn timeline(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn note(&self, what: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.log.lock().unwrap().push(format!("{at:8.3}s {what}"));
    }

    fn others(&self, id: u64) -> Vec<End> {
        self.nodes
            .iter()
            .filter(|n| **n != id)
            .map(|n| End::Node(*n))
            .chain([End::Client])
            .collect()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One proxied connection from `from` to node `to`.
struct Link {
    from: End,
    to: End,
    rules: Arc<Mutex<Rules>>,
    changed: watch::Receiver<u64>,
}

impl Link {
    fn rule(&self, from: End, to: End) -> Option<Fault> {
        self.rules.lock().unwrap().faults.get(&(from, to)).copied()
    }

    fn cut(&self) -> bool {
        self.rule(self.from, self.to) == Some(Fault::Cut)
            || self.rule(self.to, self.from) == Some(Fault::Cut)
    }

    async fn serve(mut self, client: TcpStream, upstream: SocketAddr) {
        // A blackholed connection attempt hangs (the SYN is dropped); a cut one is refused.
        loop {
            if self.cut() {
                return;
            }
            if self.rule(self.from, self.to) != Some(Fault::Blackhole) {
                break;
            }
            if self.changed.changed().await.is_err() {
                return;
            }
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = pump(&self, self.from, self.to, client_read, server_write);
        let down = pump(&self, self.to, self.from, server_read, client_write);
        let mut changed = self.changed.clone();
        let watch_cut = async {
            loop {
                if self.cut() || changed.changed().await.is_err() {
                    return;
                }
            }
        };
        // Whichever ends first (a side closed, or the link cut) drops both sockets.
        tokio::select! {
            _ = up => {}
            _ = down => {}
            _ = watch_cut => {}
        }
    }
}

/// Copies bytes `from` → `to` under the rules: held while blackholed, delayed when delayed.
async fn pump(
    link: &Link,
    from: End,
    to: End,
    mut read: tokio::net::tcp::OwnedReadHalf,
    mut write: tokio::net::tcp::OwnedWriteHalf,
) {
    // The writer delivers each chunk at its time, in order.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // The reader saw the end: pass the half-close on.
        let _ = write.shutdown().await;
    };
    let mut changed = link.changed.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Held bytes stay in the socket until the blackhole is lifted.
            while link.rule(from, to) == Some(Fault::Blackhole) {
                if changed.changed().await.is_err() {
                    return;
                }
            }
            let n = tokio::select! {
                n = read.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                // A rule changed while waiting: check it before reading on.
                r = changed.changed() => {
                    if r.is_err() { return; }
                    continue;
                }
            };
            let delay = match link.rule(from, to) {
                Some(Fault::Delay(d)) => d,
                _ => Duration::ZERO,
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    // The reader's end drops `tx`, so the writer delivers what is queued and ends; a writer
    // that fails drops `rx`, so the reader ends at its next chunk.
    tokio::join!(writer, reader);
}
