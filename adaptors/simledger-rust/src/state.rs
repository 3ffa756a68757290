//! The adaptor's durable state: one JSON file, rewritten whole on every change (write a
//! temporary file, fsync it, rename it over the old one, fsync the directory), so a crash leaves
//! the old state or the new one, never a mix. A change and the ledger cursor that goes with it
//! are one write, so a crash neither loses nor doubles an incoming settlement. A lock file keeps
//! a second adaptor process off the same state.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StateData {
    pub version: u32,
    /// The ledger account the state belongs to; another one is refused.
    pub ledger_account: String,
    /// The ledger's asset once it has answered.
    pub asset: Option<Asset>,
    /// The set-up host accounts, by host account id.
    pub accounts: BTreeMap<String, AccountRecord>,
    /// The SendMoney idempotency keys used, by key.
    pub payments: BTreeMap<String, PaymentRecord>,
    /// Every transfer into our ledger account from another account, in ledger order.
    pub incoming: Vec<IncomingRecord>,
    /// The ledger sequence of the last transfer into our account taken (or skipped as a mint):
    /// WatchTransfers resumes after it.
    pub cursor: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Asset {
    pub code: String,
    pub scale: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AccountRecord {
    /// The peer's ledger account; empty until the peers have exchanged them.
    #[serde(default)]
    pub peer_ledger_account: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentRecord {
    pub account_id: String,
    pub value: String,
    pub scale: u32,
    /// The peer's ledger account when the key was first used: a retry pays the same one.
    pub to: String,
    pub settlement_id: String,
    /// The ledger confirmed the transfer. Until then the outcome may be unknown.
    pub completed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IncomingRecord {
    pub transfer_id: String,
    pub from: String,
    pub value: String,
    pub scale: u32,
    pub sequence: u64,
    /// The host account of the payer; empty while its ledger account belongs to no known peer
    /// (the settlement is reported once it does).
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub acknowledged: bool,
}

impl StateData {
    /// The host account whose peer pays from `ledger_account`, or "".
    pub fn account_of_peer(&self, ledger_account: &str) -> String {
        self.accounts
            .iter()
            .find(|(_, record)| record.peer_ledger_account == ledger_account)
            .map(|(id, _)| id.clone())
            .unwrap_or_default()
    }

    /// Reported (attributed) settlements not acknowledged yet, in ledger order.
    pub fn unacknowledged(&self) -> impl Iterator<Item = &IncomingRecord> {
        self.incoming
            .iter()
            .filter(|r| !r.acknowledged && !r.account_id.is_empty())
    }

    pub fn incoming_mut(&mut self, transfer_id: &str) -> Option<&mut IncomingRecord> {
        self.incoming
            .iter_mut()
            .find(|r| r.transfer_id == transfer_id)
    }
}

/// The state in memory and its file. Not synchronised: the adaptor holds its lock around it.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    data: StateData,
    _lock: File,
}

impl StateFile {
    /// Loads the file at `path` (missing: a fresh state for `ledger_account`) and locks it.
    pub fn open(path: &Path, ledger_account: &str) -> Result<StateFile, String> {
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                format!(
                    "state file {}: cannot open {}: {e}",
                    path.display(),
                    lock_path.display()
                )
            })?;
        lock.try_lock().map_err(|_| {
            format!(
                "state file {} is in use by another adaptor process",
                path.display()
            )
        })?;
        let data = match fs::read(path) {
            Ok(content) => serde_json::from_slice::<StateData>(&content).map_err(|e| {
                format!(
                    "state file {}: not a state file of this adaptor: {e}",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => StateData {
                version: VERSION,
                ledger_account: ledger_account.into(),
                ..StateData::default()
            },
            Err(e) => return Err(format!("state file {}: {e}", path.display())),
        };
        if data.version != VERSION {
            return Err(format!(
                "state file {}: version {}, expected {VERSION}",
                path.display(),
                data.version
            ));
        }
        if data.ledger_account != ledger_account {
            return Err(format!(
                "state file {} belongs to ledger account {:?}, not {ledger_account:?}: give each account its own file",
                path.display(),
                data.ledger_account
            ));
        }
        Ok(StateFile {
            path: path.to_path_buf(),
            data,
            _lock: lock,
        })
    }

    pub fn data(&self) -> &StateData {
        &self.data
    }

    /// Applies `change` and makes it durable; on any error the state (memory and file) is as
    /// before.
    pub fn update<T>(&mut self, change: impl FnOnce(&mut StateData) -> T) -> io::Result<T> {
        let mut next = self.data.clone();
        let result = change(&mut next);
        write_durably(&self.path, &serde_json::to_vec_pretty(&next)?)?;
        self.data = next;
        Ok(result)
    }
}

fn write_durably(path: &Path, content: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = File::create(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, path)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("simledger-rust-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn changes_survive_a_reopen_and_the_file_is_locked() {
        let dir = temp_dir("reopen");
        let path = dir.join("state.json");
        {
            let mut state = StateFile::open(&path, "host:alice").unwrap();
            state
                .update(|d| {
                    d.accounts.insert(
                        "bob".into(),
                        AccountRecord {
                            peer_ledger_account: "host:bob".into(),
                        },
                    );
                    d.cursor = 7;
                })
                .unwrap();
            assert!(StateFile::open(&path, "host:alice")
                .unwrap_err()
                .contains("in use"));
        }
        let state = StateFile::open(&path, "host:alice").unwrap();
        assert_eq!(state.data().cursor, 7);
        assert_eq!(state.data().account_of_peer("host:bob"), "bob");
        assert_eq!(state.data().account_of_peer("host:carol"), "");
        drop(state);
        assert!(StateFile::open(&path, "host:other")
            .unwrap_err()
            .contains("belongs to"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = temp_dir("failed");
        let path = dir.join("state.json");
        let mut state = StateFile::open(&path, "a").unwrap();
        state.update(|d| d.cursor = 1).unwrap();
        // A directory where the temporary file must go makes the write fail.
        fs::create_dir(path.with_extension("tmp")).unwrap();
        assert!(state.update(|d| d.cursor = 2).is_err());
        assert_eq!(state.data().cursor, 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unacknowledged_are_the_attributed_ones_in_order() {
        let record = |id: &str, account: &str, acknowledged| IncomingRecord {
            transfer_id: id.into(),
            from: "p".into(),
            value: "1".into(),
            scale: 2,
            sequence: 1,
            account_id: account.into(),
            acknowledged,
        };
        let data = StateData {
            incoming: vec![
                record("t1", "bob", true),
                record("t2", "", false),
                record("t3", "bob", false),
            ],
            ..StateData::default()
        };
        let ids: Vec<_> = data
            .unacknowledged()
            .map(|r| r.transfer_id.as_str())
            .collect();
        assert_eq!(ids, ["t3"]);
    }
}
