//! A one-shot timer on the fleet's poll, with nanosecond resolution.
//!
//! epoll's timeout is in whole milliseconds (mio rounds a shorter one up
//! to 1 ms), so a send loop that sleeps until its next due time through
//! the poll timeout alone sends up to a millisecond late. Latency counts
//! from the schedule, so that lag lands in every figure: at low rates it
//! was about half of a 1 ms median. A timerfd armed for the exact wait
//! wakes the same `epoll_wait` on time.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create, timerfd_settime,
};

/// The alarm's token: no connection index reaches it.
pub(crate) const ALARM: Token = Token(usize::MAX);

#[derive(Debug)]
pub(crate) struct Alarm {
    fd: OwnedFd,
    /// The instant the timer is set for. A loop woken by sockets asks for
    /// the same due time again and again; re-arming each time costs a
    /// syscall and a timer reprogram (a VM exit under KVM): 7 % of the
    /// generator's CPU in rooms of 10 at 50,000 deliveries/s.
    armed_for: Option<Instant>,
}

impl Alarm {
    /// A disarmed alarm registered on `registry` under [`ALARM`].
    pub(crate) fn new(registry: &Registry) -> io::Result<Self> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        registry.register(&mut SourceFd(&fd.as_raw_fd()), ALARM, Interest::READABLE)?;
        Ok(Self { fd, armed_for: None })
    }

    /// Fires once at `at` (now, if that has passed). Arming again replaces
    /// the previous time and clears an expiry not yet seen, so the fd never
    /// needs a read: registered edge-triggered, each expiry is one new event.
    pub(crate) fn arm_at(&mut self, at: Instant) -> io::Result<()> {
        let now = Instant::now();
        if self.armed_for == Some(at) && at > now {
            return Ok(());
        }
        // A zero it_value would disarm the timer instead of firing now.
        let after = at.saturating_duration_since(now).max(Duration::from_nanos(1));
        let value = Itimerspec {
            it_interval: Timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: Timespec {
                tv_sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(after.subsec_nanos()),
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &value)?;
        self.armed_for = Some(at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    #[test]
    fn an_armed_alarm_wakes_a_poll_that_would_otherwise_sleep_a_second() {
        let mut poll = Poll::new().unwrap();
        let mut alarm = Alarm::new(poll.registry()).unwrap();
        let mut events = Events::with_capacity(4);
        for _ in 0..3 {
            let start = Instant::now();
            alarm.arm_at(start + Duration::from_micros(300)).unwrap();
            poll.poll(&mut events, Some(Duration::from_secs(1))).unwrap();
            let elapsed = start.elapsed();
            assert!(
                events.iter().any(|e| e.token() == ALARM),
                "the poll ended without the alarm (after {elapsed:?})"
            );
            assert!(elapsed >= Duration::from_micros(300), "fired early: {elapsed:?}");
        }
    }

    #[test]
    fn arming_again_replaces_the_earlier_time() {
        let mut poll = Poll::new().unwrap();
        let mut alarm = Alarm::new(poll.registry()).unwrap();
        let mut events = Events::with_capacity(4);
        let now = Instant::now();
        alarm.arm_at(now + Duration::from_micros(200)).unwrap();
        alarm.arm_at(now + Duration::from_secs(30)).unwrap();
        poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
        assert!(events.is_empty(), "the replaced 200 µs time still fired");
    }

    #[test]
    fn asking_again_for_the_same_time_keeps_it_and_an_expired_time_fires_again() {
        let mut poll = Poll::new().unwrap();
        let mut alarm = Alarm::new(poll.registry()).unwrap();
        let mut events = Events::with_capacity(4);
        let at = Instant::now() + Duration::from_micros(500);
        alarm.arm_at(at).unwrap();
        alarm.arm_at(at).unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(1))).unwrap();
        assert!(events.iter().any(|e| e.token() == ALARM));
        assert!(Instant::now() >= at, "fired before its time");
        // The same instant, now past: fires at once rather than never.
        alarm.arm_at(at).unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(1))).unwrap();
        assert!(events.iter().any(|e| e.token() == ALARM), "a past time did not fire");
    }
}
