//! A static Rust guest program: std collections, formatting, env, args,
//! stdin, and an exit code.
use std::collections::HashMap;
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("read stdin");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in input.split_whitespace() {
        *counts.entry(w).or_default() += 1;
    }
    let mut words: Vec<_> = counts.into_iter().collect();
    words.sort();
    println!("hello from rust, args={args:?}");
    println!("greeting={}", std::env::var("GREETING").unwrap_or_default());
    println!("words={words:?}");
    let boxed: Vec<Box<u64>> = (0..10_000).map(Box::new).collect();
    println!("sum={}", boxed.iter().map(|b| **b).sum::<u64>());
    std::process::exit(if args.first().map(String::as_str) == Some("fail") { 9 } else { 0 });
}
