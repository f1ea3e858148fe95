//! An event-sourced bank: accounts rebuilt by replaying their streams, commands checked
//! against business rules, and concurrent tellers that retry on version conflicts.
//!
//! Run: `cargo run -p caskade-examples --example bank [DATA_DIR]` (a temporary directory
//! if none is given).

use std::sync::atomic::{AtomicU64, Ordering};

use caskade_eventstore::{EventStore, Options};
use caskade_examples::bank::{Account, BankError, Command, execute};

const ACCOUNTS: [&str; 3] = ["alice", "bob", "carol"];
const TELLERS: u64 = 4;
const OPERATIONS_PER_TELLER: u64 = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let store = EventStore::open(&dir, Options::default())?;

    for id in ACCOUNTS {
        match execute(
            &store,
            id,
            &Command::Open {
                owner: id.to_owned(),
            },
        ) {
            Ok(_) | Err(BankError::AlreadyOpen(_)) => {}
            Err(error) => return Err(error.into()),
        }
        execute(&store, id, &Command::Deposit { amount: 1_000 })?;
    }
    let opening: u64 = ACCOUNTS
        .iter()
        .map(|id| Account::load(&store, id).map(|a| a.balance))
        .sum::<Result<_, _>>()?;

    // Tellers deposit and withdraw on the same accounts at once; the expected-version check
    // makes each command see the balance it acts on, so no withdrawal overdraws.
    let deposited = AtomicU64::new(0);
    let withdrawn = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for teller in 0..TELLERS {
            let (store, deposited, withdrawn, refused) = (&store, &deposited, &withdrawn, &refused);
            scope.spawn(move || -> Result<(), BankError> {
                for op in 0..OPERATIONS_PER_TELLER {
                    let id = ACCOUNTS[((teller + op) % 3) as usize];
                    let amount = 100 + (teller * 37 + op * 11) % 400;
                    if (teller + op) % 2 == 0 {
                        execute(store, id, &Command::Deposit { amount })?;
                        deposited.fetch_add(amount, Ordering::Relaxed);
                    } else {
                        match execute(store, id, &Command::Withdraw { amount }) {
                            Ok(_) => {
                                withdrawn.fetch_add(amount, Ordering::Relaxed);
                            }
                            Err(BankError::InsufficientFunds { .. }) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => return Err(error),
                        }
                    }
                }
                Ok(())
            });
        }
    });

    let mut total = 0;
    for id in ACCOUNTS {
        let account = Account::load(&store, id)?;
        println!(
            "{id}: balance {} at version {}",
            account.balance,
            account.version.map_or(0, |v| v.0)
        );
        total += account.balance;
    }
    let expected = opening + deposited.into_inner() - withdrawn.into_inner();
    println!("refused withdrawals: {}", refused.into_inner());
    println!("total {total}, expected {expected}");
    if total != expected {
        return Err(format!("balances add up to {total}, expected {expected}").into());
    }
    store.close()?;
    println!("ok");
    Ok(())
}
