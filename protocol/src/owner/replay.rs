//! What a join replays and what a history page holds: from the memory
//! window, or from a log store read merged with the window's newer part, cut
//! to the byte budget of one answer.

use super::log::{ReadPage, ReadRange, Stored};
use super::room::Room;
use super::{Joined, PRESENCE_LIST_MAX, PresenceSnapshot};
use crate::Position;

/// What a join must read from the store, if the window cannot answer it:
/// the messages after the recovery point, or the newest `history` when the
/// window holds fewer and older ones exist.
pub(super) fn join_read_range<O>(
    room: &Room<O>,
    history: u32,
    recover: Option<Position>,
    history_cap: usize,
) -> Option<ReadRange> {
    match recover {
        Some(p) if p.epoch == room.epoch => {
            if p.offset >= room.released || room.window_covers_after(p.offset) {
                None
            } else {
                Some(ReadRange {
                    after: p.offset,
                    before: 0,
                    limit: history_cap.max(1),
                    newest: false,
                })
            }
        }
        _ => {
            let want = (history as usize).min(history_cap);
            (want > room.window_len() && room.window_first() > 1).then_some(ReadRange {
                after: 0,
                before: 0,
                limit: want,
                newest: true,
            })
        }
    }
}

/// Whether a history page needs messages older than the window holds.
pub(super) fn history_needs_store<O>(room: &mut Room<O>, range: ReadRange) -> bool {
    if !room.range_reaches_below_window(range) {
        return false;
    }
    // Newest first: a full page from the window is the answer.
    !(range.newest && room.window_range(range).0.len() >= range.limit)
}

/// Messages from the store followed by the window's newer ones, within
/// `range`, cut to its limit from the end it keeps. Returns them and whether
/// any were cut.
fn merge(store: Vec<Stored>, window: &[Stored], range: ReadRange) -> (Vec<Stored>, bool) {
    let last = store.last().map_or(range.after, |m| m.offset.max(range.after));
    let mut all = store;
    all.extend(
        window
            .iter()
            .filter(|m| m.offset > last && range.contains(m.offset))
            .cloned(),
    );
    if all.len() <= range.limit {
        return (all, false);
    }
    if range.newest {
        let cut = all.len() - range.limit;
        all.drain(..cut);
    } else {
        all.truncate(range.limit);
    }
    (all, true)
}

pub(super) fn resolve_join<O>(
    room: &mut Room<O>,
    name: &str,
    history: u32,
    recover: Option<Position>,
    read: Option<ReadPage>,
    budget: usize,
    presence: bool,
) -> Joined {
    let mut recovered = false;
    let mut replay = None;
    if let Some(p) = recover.filter(|p| p.epoch == room.epoch) {
        if p.offset <= room.released && room.window_covers_after(p.offset) {
            replay = Some(room.window_after(p.offset).to_vec());
            recovered = true;
        } else if let Some(page) = read.as_ref().filter(|page| page.complete && !page.more) {
            let range = ReadRange {
                after: p.offset,
                before: 0,
                limit: usize::MAX,
                newest: false,
            };
            let window = room.window_after(p.offset);
            replay = Some(merge(page.messages.clone(), window, range).0);
            recovered = true;
        }
    } else if recover.is_some() && room.window_covers_after(0) {
        // Another epoch (the node restarted, the room was recreated): the
        // client has seen none of this one, so all of it is what it
        // missed, when the window still holds all of it. The end of the
        // old epoch is unknown, so the answer still says recovered = false.
        replay = Some(room.window_after(0).to_vec());
    }
    let history = replay.unwrap_or_else(|| {
        let n = history as usize;
        match read.filter(|_| recover.is_none_or(|p| p.epoch != room.epoch)) {
            Some(page) if n > room.window_len() => {
                let range = ReadRange {
                    after: 0,
                    before: 0,
                    limit: n,
                    newest: true,
                };
                merge(page.messages, room.window_after(0), range).0
            }
            _ => room.window_last(n).to_vec(),
        }
    });
    // A replay larger than the byte budget would trip the connection's
    // outbound limit: send the newest part, and if that leaves a gap in a
    // recovery, say so (recovered = false) so the client refetches.
    let (history, trimmed) = fit_bytes(history, name, budget, true);
    Joined {
        epoch: room.epoch,
        offset: room.released,
        recovered: recovered && !trimmed,
        history,
        presence: presence.then(|| {
            let (users, count) = room.presence(PRESENCE_LIST_MAX);
            PresenceSnapshot { users, count }
        }),
    }
}

pub(super) fn resolve_history<O>(
    room: &mut Room<O>,
    name: &str,
    range: ReadRange,
    page: Option<ReadPage>,
    budget: usize,
) -> (Vec<Stored>, bool) {
    let (messages, more) = match page {
        Some(page) => {
            let store_more = page.more;
            let (window, _) = room.window_range(ReadRange {
                limit: usize::MAX,
                ..range
            });
            let (all, cut) = merge(page.messages, window, range);
            (all, cut || store_more)
        }
        None => {
            let (window, more) = room.window_range(range);
            (window.to_vec(), more)
        }
    };
    // Forward paging keeps the oldest; otherwise the newest.
    let (messages, trimmed) = fit_bytes(messages, name, budget, range.newest);
    (messages, more || trimmed)
}

/// The longest run of `messages` (from the newest end if `keep_newest`, else
/// from the oldest) whose encoded size fits `budget`; and whether any message
/// was left out.
fn fit_bytes(mut messages: Vec<Stored>, room: &str, budget: usize, keep_newest: bool) -> (Vec<Stored>, bool) {
    let mut used = 0;
    let mut fits = |m: &Stored| {
        used += m.encoded_len(room);
        used <= budget
    };
    let total = messages.len();
    let n = if keep_newest {
        messages.iter().rev().take_while(|m| fits(m)).count()
    } else {
        messages.iter().take_while(|m| fits(m)).count()
    };
    if keep_newest {
        messages.drain(..total - n);
    } else {
        messages.truncate(n);
    }
    (messages, n < total)
}
