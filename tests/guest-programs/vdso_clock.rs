// glibc's clocks in a static Rust program (std reads them through glibc's
// clock_gettime): many reads, which should cost no system call with a
// vDSO. Prints the rounds and whether the clocks behaved.
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let start = Instant::now();
    let mut last = start;
    let mut back = 0;
    let mut wall = 0;
    for _ in 0..n {
        let now = Instant::now();
        if now < last {
            back += 1;
        }
        last = now;
        wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    }
    println!("rounds={n} went_back={back}");
    println!("realtime_s={wall}");
}
