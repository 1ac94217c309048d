//! std threads in a static Rust guest program: spawn/join, an mpsc
//! channel from several producers, a Mutex shared through an Arc, and a
//! scoped thread borrowing from the stack.
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

fn main() {
    let counter = Arc::new(Mutex::new(0u64));
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for id in 0..4u64 {
        let counter = Arc::clone(&counter);
        let tx = tx.clone();
        handles.push(thread::spawn(move || {
            for i in 0..1000u64 {
                *counter.lock().unwrap() += 1;
                tx.send(id * 1000 + i).unwrap();
            }
            id * id
        }));
    }
    drop(tx);
    let received: Vec<u64> = rx.iter().collect();
    let joined: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let data: Vec<u64> = (1..=100).collect();
    let halves = thread::scope(|s| {
        let (a, b) = data.split_at(50);
        let ha = s.spawn(|| a.iter().sum::<u64>());
        let hb = s.spawn(|| b.iter().sum::<u64>());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    println!("counter={}", *counter.lock().unwrap());
    println!("received={} sum={}", received.len(), received.iter().sum::<u64>());
    println!("joined={joined}");
    println!("scoped={}+{}", halves.0, halves.1);
    let name = thread::Builder::new().name("named".into()).spawn(|| thread::current().name().map(String::from));
    println!("name={}", name.unwrap().join().unwrap().unwrap_or_default());
}
