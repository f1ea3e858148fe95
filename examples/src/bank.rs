//! An event-sourced bank account.
//!
//! The account's state is never stored: it is rebuilt by replaying the account's stream.
//! A command loads the account, decides which events follow from it (or rejects it with a
//! business-rule error), and appends them with the version it loaded as the expected
//! version. If another writer appended in between, the append fails with
//! `WrongExpectedVersion` and the command is retried on the fresh state, so concurrent
//! commands never break a rule (no withdrawal ever overdraws an account).

use caskade_eventstore::{EventData, EventStore, ExpectedVersion, RecordedEvent, StreamVersion};
use serde::{Deserialize, Serialize};

/// The events of an account stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountEvent {
    /// The account was opened.
    Opened {
        /// Who owns it.
        owner: String,
    },
    /// Money came in.
    Deposited {
        /// How much, in cents.
        amount: u64,
    },
    /// Money went out.
    Withdrawn {
        /// How much, in cents.
        amount: u64,
    },
}

impl AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "AccountOpened",
            AccountEvent::Deposited { .. } => "MoneyDeposited",
            AccountEvent::Withdrawn { .. } => "MoneyWithdrawn",
        }
    }

    /// Decodes a recorded account event.
    ///
    /// # Errors
    /// [`BankError::BadEvent`] if the event is not an account event.
    pub fn from_recorded(event: &RecordedEvent) -> Result<Self, BankError> {
        event.json().map_err(|e| BankError::BadEvent(e.to_string()))
    }
}

/// What a client asks of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open the account.
    Open {
        /// Its owner.
        owner: String,
    },
    /// Deposit money.
    Deposit {
        /// Cents.
        amount: u64,
    },
    /// Withdraw money, if the balance allows.
    Withdraw {
        /// Cents.
        amount: u64,
    },
}

/// Why a command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The account does not exist yet.
    #[error("account {0} is not open")]
    NotOpen(String),
    /// The account exists already.
    #[error("account {0} is already open")]
    AlreadyOpen(String),
    /// Amounts must be positive.
    #[error("amounts must be greater than zero")]
    ZeroAmount,
    /// A withdrawal larger than the balance.
    #[error("insufficient funds: balance {balance}, withdrawal {amount}")]
    InsufficientFunds {
        /// The balance.
        balance: u64,
        /// The amount asked for.
        amount: u64,
    },
    /// Too many concurrent writers in a row.
    #[error("gave up after {0} conflicting attempts")]
    TooMuchContention(u32),
    /// An event in the stream that is not an account event.
    #[error("not an account event: {0}")]
    BadEvent(String),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] caskade_eventstore::Error),
}

/// An account's state, as replayed from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// The owner, once opened.
    pub owner: Option<String>,
    /// The balance in cents.
    pub balance: u64,
    /// The version of the last event applied; `None` for a stream with no events.
    pub version: Option<StreamVersion>,
}

impl Account {
    /// Applies one event.
    pub fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }

    /// Rebuilds the account by replaying its stream.
    ///
    /// # Errors
    /// [`BankError::Store`], [`BankError::BadEvent`].
    pub fn load(store: &EventStore, id: &str) -> Result<Account, BankError> {
        let mut account = Account::default();
        for event in store.read_stream(&stream(id), caskade_eventstore::ReadStream::forwards())? {
            let event = event?;
            account.apply(&AccountEvent::from_recorded(&event)?);
            account.version = Some(event.version);
        }
        Ok(account)
    }

    /// The events `command` produces on this account, or the rule it breaks.
    ///
    /// # Errors
    /// The business-rule variants of [`BankError`].
    pub fn decide(&self, id: &str, command: &Command) -> Result<Vec<AccountEvent>, BankError> {
        match command {
            Command::Open { owner } => {
                if self.owner.is_some() {
                    return Err(BankError::AlreadyOpen(id.to_owned()));
                }
                Ok(vec![AccountEvent::Opened {
                    owner: owner.clone(),
                }])
            }
            Command::Deposit { amount } | Command::Withdraw { amount } => {
                if self.owner.is_none() {
                    return Err(BankError::NotOpen(id.to_owned()));
                }
                if *amount == 0 {
                    return Err(BankError::ZeroAmount);
                }
                if let Command::Withdraw { amount } = command {
                    if *amount > self.balance {
                        return Err(BankError::InsufficientFunds {
                            balance: self.balance,
                            amount: *amount,
                        });
                    }
                    return Ok(vec![AccountEvent::Withdrawn { amount: *amount }]);
                }
                Ok(vec![AccountEvent::Deposited { amount: *amount }])
            }
        }
    }
}

/// The stream of account `id`.
#[must_use]
pub fn stream(id: &str) -> String {
    format!("account-{id}")
}

/// How many times a command is retried after losing a race.
pub const MAX_ATTEMPTS: u32 = 100;

/// Loads the account, decides, and appends with the loaded version as the expected version,
/// retrying on conflicts. Returns the account as it is after the command.
///
/// # Errors
/// The business-rule variants of [`BankError`], [`BankError::TooMuchContention`],
/// [`BankError::Store`].
pub fn execute(store: &EventStore, id: &str, command: &Command) -> Result<Account, BankError> {
    for _ in 0..MAX_ATTEMPTS {
        let mut account = Account::load(store, id)?;
        let events = account.decide(id, command)?;
        let expected = account
            .version
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let data = events
            .iter()
            .map(|event| EventData::json(event.event_type(), event))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BankError::BadEvent(e.to_string()))?;
        match store.append(&stream(id), expected, &data) {
            Ok(result) => {
                for event in &events {
                    account.apply(event);
                }
                account.version = Some(result.next_expected_version);
                return Ok(account);
            }
            Err(caskade_eventstore::Error::WrongExpectedVersion { .. }) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Err(BankError::TooMuchContention(MAX_ATTEMPTS))
}
