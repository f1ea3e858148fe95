//! The suite: which workloads run, in which order, against our server and the peer.

use crate::client::Client;
use crate::figures::Figures;
use crate::workloads::{ReadTarget, appends, random_reads, read_all, read_stream, subscribe};

/// A part of the suite, as named on `caskade-bench --only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// Single-event appends, once per `--clients` count.
    Append,
    /// Appends of 100 events per call.
    Batch100,
    /// Appends of 1,000 events per call.
    Batch1000,
    /// Reading one whole stream.
    ReadStream,
    /// Reading `$all` from the start.
    ReadAll,
    /// Reads of one event at a random version of a stream, once per `--clients` count.
    RandomRead,
    /// Send-to-subscriber latency, beside the same appends' round trips.
    Subscribe,
    /// The transport floor: health checks, once per `--clients` count.
    Floor,
}

/// Every part, in the order the suite runs them.
pub(crate) const ALL_PARTS: [Part; 8] = [
    Part::Append,
    Part::Batch100,
    Part::Batch1000,
    Part::ReadStream,
    Part::ReadAll,
    Part::RandomRead,
    Part::Subscribe,
    Part::Floor,
];

/// Our server's name in the figures' lines.
const CASKADE: &str = "Caskade";

/// The width of the names in front of the figures' lines.
const LABEL_WIDTH: usize = 16;

/// What goes in front of Caskade's figures: its name when they are compared with a peer's.
pub(crate) fn caskade_label(compared: bool) -> String {
    if compared {
        format!("{CASKADE:<LABEL_WIDTH$}")
    } else {
        String::new()
    }
}

/// One workload of the suite.
#[derive(Debug, Clone, Copy)]
enum Workload {
    Appends {
        clients: usize,
        batch: u64,
        calls: u64,
    },
    ReadStream,
    ReadAll,
    RandomReads,
    Subscribe,
}

/// The sizes the suite runs at.
pub(crate) struct Sizes<'a> {
    /// Client counts of the single-event appends and the random reads.
    pub(crate) clients: &'a [usize],
    /// Calls of the single-event workloads, and events of the streams read.
    pub(crate) events: u64,
    /// Calls of the batched appends.
    pub(crate) batch_calls: u64,
    /// An existing stream for the random reads, instead of one written for them.
    pub(crate) read_stream: Option<&'a str>,
}

impl Workload {
    async fn run(
        self,
        connect: &(impl AsyncFn() -> anyhow::Result<Client> + Sync),
        run: &str,
        sizes: &Sizes<'_>,
    ) -> anyhow::Result<Vec<Figures>> {
        let events = sizes.events;
        let figures = match self {
            Workload::Appends {
                clients,
                batch,
                calls,
            } => appends(connect, run, clients, calls, batch).await?,
            Workload::ReadStream => read_stream(&mut connect().await?, run, events).await?,
            Workload::ReadAll => read_all(&mut connect().await?).await?,
            Workload::Subscribe => return subscribe(connect, run, events.min(5000)).await,
            Workload::RandomReads => {
                let mut client = connect().await?;
                let target = match sizes.read_stream {
                    Some(stream) => ReadTarget::existing(&mut client, stream).await?,
                    None => ReadTarget::write(&mut client, run, events).await?,
                };
                let mut figures = Vec::new();
                for &clients in sizes.clients {
                    figures.push(random_reads(connect, &target, clients, events).await?);
                }
                return Ok(figures);
            }
        };
        Ok(vec![figures])
    }
}

/// What the suite runs against: a name for the figures' lines and a way to connect.
pub(crate) struct Target<C> {
    pub(crate) name: &'static str,
    pub(crate) connect: C,
}

/// The whole suite against our server and, if given, the peer, printed as it goes. With a
/// peer, each workload runs against both before the next starts, so both meet the disk and
/// the machine in the same state. Returns our figures and the peer's.
pub(crate) async fn run_suite(
    ours: impl AsyncFn() -> anyhow::Result<Client> + Sync,
    peer: Option<Target<impl AsyncFn() -> anyhow::Result<Client> + Sync>>,
    parts: &[Part],
    sizes: &Sizes<'_>,
) -> anyhow::Result<(Vec<Figures>, Vec<Figures>)> {
    let (clients, events, batch_calls) = (sizes.clients, sizes.events, sizes.batch_calls);
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let mut workloads = Vec::new();
    for part in ALL_PARTS.into_iter().filter(|part| parts.contains(part)) {
        match part {
            Part::Append => workloads.extend(clients.iter().map(|&clients| Workload::Appends {
                clients,
                batch: 1,
                calls: events,
            })),
            Part::Batch100 => workloads.push(Workload::Appends {
                clients: 1,
                batch: 100,
                calls: batch_calls,
            }),
            Part::Batch1000 => workloads.push(Workload::Appends {
                clients: 1,
                batch: 1000,
                calls: batch_calls,
            }),
            Part::ReadStream => workloads.push(Workload::ReadStream),
            Part::ReadAll => workloads.push(Workload::ReadAll),
            Part::RandomRead => workloads.push(Workload::RandomReads),
            Part::Subscribe => workloads.push(Workload::Subscribe),
            // Run by the caller, against our server only: the peer's health service is
            // not what is being compared.
            Part::Floor => {}
        }
    }
    let (mut our_figures, mut peer_figures) = (Vec::new(), Vec::new());
    for workload in workloads {
        let label = caskade_label(peer.is_some());
        for figures in workload.run(&ours, &run, sizes).await? {
            println!("{label}{}", figures.line());
            our_figures.push(figures);
        }
        if let Some(peer) = &peer {
            // Streams of its own: the peer may be the same server, through another API.
            let peer_run = format!("{run}-peer");
            for figures in workload.run(&peer.connect, &peer_run, sizes).await? {
                println!("{:<LABEL_WIDTH$}{}", peer.name, figures.line());
                peer_figures.push(figures);
            }
        }
    }
    Ok((our_figures, peer_figures))
}
