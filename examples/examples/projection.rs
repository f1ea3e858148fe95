//! A read model of every account's balance, built by a checkpointed `$all` subscription that
//! resumes after a restart without reprocessing or missing events.
//!
//! Run: `cargo run -p caskade-examples --example projection`.

use caskade_eventstore::{EventStore, Options};
use caskade_examples::bank::{Account, Command, execute};
use caskade_examples::projection::catch_up;

fn activity(store: &EventStore, round: u64) -> Result<(), Box<dyn std::error::Error>> {
    for i in 0..5 {
        let id = format!("acct{i}");
        if round == 0 {
            execute(store, &id, &Command::Open { owner: id.clone() })?;
        }
        execute(
            store,
            &id,
            &Command::Deposit {
                amount: 100 * (i + 1) + round,
            },
        )?;
        execute(store, &id, &Command::Withdraw { amount: 10 + round })?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    let store = EventStore::open(dir.path(), Options::default())?;
    activity(&store, 0)?;
    let first = catch_up(&store, 4).await?;
    println!(
        "first run: {} events applied, up to position {:?}",
        first.events_applied, first.position
    );
    store.close()?;

    // A restart: the projection resumes from its checkpoint.
    let store = EventStore::open(dir.path(), Options::default())?;
    activity(&store, 1)?;
    let second = catch_up(&store, 4).await?;
    println!(
        "after restart: {} events applied in all, up to position {:?}",
        second.events_applied, second.position
    );

    let committed = store.committed_position().0;
    for (stream, balance) in &second.balances {
        let id = stream.trim_start_matches("account-");
        let replayed = Account::load(&store, id)?.balance;
        println!("{stream}: {balance} (replayed: {replayed})");
        if *balance != replayed {
            return Err(
                format!("{stream}: projection says {balance}, replay says {replayed}").into(),
            );
        }
    }
    if second.events_applied != committed {
        return Err(format!(
            "applied {} events, {committed} were committed",
            second.events_applied
        )
        .into());
    }
    store.close()?;
    println!("ok");
    Ok(())
}
