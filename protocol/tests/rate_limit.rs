//! The token bucket behind the publish and typing limits, on virtual time.

use std::time::{Duration, Instant};

use herald_protocol::TokenBucket;

fn take_all(bucket: &mut TokenBucket, now: Instant) -> usize {
    std::iter::from_fn(|| bucket.try_take(now).then_some(()))
        .take(10_000)
        .count()
}

#[test]
fn burst_then_sustained_rate() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(50, 100, t0);
    assert_eq!(take_all(&mut bucket, t0), 100);
    // 50 per second: one every 20 ms.
    assert!(!bucket.try_take(t0 + Duration::from_millis(19)));
    assert!(bucket.try_take(t0 + Duration::from_millis(20)));
    assert_eq!(take_all(&mut bucket, t0 + Duration::from_secs(1)), 49);
    // An hour of silence refills only the burst.
    assert_eq!(take_all(&mut bucket, t0 + Duration::from_secs(3600)), 100);
}

#[test]
fn zero_burst_still_allows_one() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(1, 0, t0);
    assert_eq!(take_all(&mut bucket, t0), 1);
}

#[test]
fn zero_rate_never_refills() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(0, 3, t0);
    assert_eq!(take_all(&mut bucket, t0), 3);
    assert_eq!(take_all(&mut bucket, t0 + Duration::from_secs(86_400)), 0);
}

#[test]
fn time_going_backwards_is_ignored() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let mut bucket = TokenBucket::new(10, 1, t0);
    assert!(bucket.try_take(t0));
    assert!(!bucket.try_take(t0 - Duration::from_secs(5)));
    assert!(bucket.try_take(t0 + Duration::from_millis(100)));
}

#[test]
fn frequent_calls_do_not_lose_refill_time() {
    // A busy connection asks for tokens more often than once a microsecond:
    // the bucket must still refill at its rate.
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(1_000, 1, t0);
    assert!(bucket.try_take(t0));
    let mut granted = 0;
    let mut now = t0;
    // 10 ms in steps of 400 ns: 10 tokens at 1,000 per second.
    for _ in 0..25_000 {
        now += Duration::from_nanos(400);
        if bucket.try_take(now) {
            granted += 1;
        }
    }
    assert_eq!(granted, 10);
}

#[test]
fn uneven_steps_add_up_to_the_rate() {
    // 7 tokens/s, polled at irregular sub-millisecond intervals for 10 s.
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(7, 1, t0);
    assert!(bucket.try_take(t0));
    let mut now = t0;
    let mut granted = 0;
    let mut step = 1u64;
    while now < t0 + Duration::from_secs(10) {
        step = step * 7_919 % 1_000_003;
        now += Duration::from_nanos(1 + step % 900_000);
        granted += usize::from(bucket.try_take(now));
    }
    assert!((69..=70).contains(&granted), "{granted} tokens in 10 s at 7/s");
}
