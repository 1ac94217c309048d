//! `/proc/net`: the sandbox's sockets in Linux's tables (`tcp`, `tcp6`,
//! `udp`, `udp6`, `udplite`, `unix`), for netstat, psutil and scripts
//! that wait for a port: each socket open in any process once, with the
//! inode its `socket:[N]` names, and the connections waiting in
//! listeners' backlogs.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::file::FileKind;
use crate::procfs::Out;
use crate::sock::{Addr, Socket, AF_INET6, AF_UNIX};
use crate::task::live_processes;

/// Calls `f` with each of the sandbox's sockets: each open one once
/// (from every process's descriptors), with its inode (the N of its
/// `socket:[N]`), then the connections waiting in its backlog (inode 0).
fn each_socket(mut f: impl FnMut(&Socket, u64)) {
    let mut seen: Vec<*const crate::file::OpenFile> = Vec::new();
    for p in live_processes() {
        let fds = p.fds.borrow();
        for e in fds.0.iter().flatten() {
            let file = &e.file;
            let FileKind::Socket(s) = &file.kind else { continue };
            if seen.contains(&Rc::as_ptr(file)) {
                continue;
            }
            seen.push(Rc::as_ptr(file));
            f(s, crate::file::anon_number(&file.path));
            let backlog = s.st.borrow().backlog.clone();
            if let Some(b) = backlog {
                for c in b.borrow().pending.iter() {
                    f(c, 0);
                }
            }
        }
    }
}

/// Linux's TCP states as /proc/net shows them.
const TCP_ESTABLISHED: u64 = 0x01;
const TCP_CLOSE: u64 = 0x07;
const TCP_CLOSE_WAIT: u64 = 0x08;
const TCP_LISTEN: u64 = 0x0a;

/// `addr` as /proc/net writes an address: IPv4 as one word (the bytes in
/// memory order, read little-endian), IPv6 as four; and the port.
fn net_addr(o: &mut Out, addr: Option<&Addr>, v6: bool) {
    let (ip, port) = match addr {
        Some(Addr::Inet { ip, port, .. }) => (*ip, *port),
        _ => ([0; 16], 0),
    };
    let words: &[u8] = if v6 { &ip } else { &ip[12..] };
    for w in words.chunks_exact(4) {
        o.hex_upper(u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64, 8);
    }
    o.s(b":").hex_upper(port as u64, 4);
}

/// The text of `/proc/net/<name>` (the `net` hook of `/proc`).
pub fn file(name: &[u8]) -> Option<Vec<u8>> {
    use crate::sock::AF_INET;
    Some(match name {
        b"tcp" => inet(AF_INET, true, false),
        b"tcp6" => inet(AF_INET6, true, false),
        b"udp" => inet(AF_INET, false, false),
        b"udp6" => inet(AF_INET6, false, false),
        b"udplite" => inet(AF_INET, false, true),
        b"unix" => unix(),
        _ => return None,
    })
}

/// `/proc/net/{tcp,tcp6,udp,udp6,udplite}`: the sockets of `domain`,
/// streams or datagrams, in Linux's columns (IPv4 lines padded as Linux
/// pads them; timers, retransmits and kernel pointers as an unprivileged
/// reader sees them).
fn inet(domain: u16, stream: bool, lite: bool) -> Vec<u8> {
    let o = &mut Out(Vec::new());
    let v6 = domain == AF_INET6;
    // (Linux pads the IPv4 tables' lines; the IPv6 ones are as long as
    // they are.)
    let width = match (v6, stream) {
        (true, _) => 0,
        (false, true) => 149,
        (false, false) => 127,
    };
    let start = o.0.len();
    match (v6, stream) {
        (false, true) => {
            o.s(b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode");
        }
        (false, false) => {
            o.s(b"   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops");
        }
        (true, _) => {
            o.s(b"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode");
            if !stream {
                o.s(b" ref pointer drops");
            }
        }
    }
    o.pad_to(start, width).s(b"\n");
    let mut i = 0u64;
    each_socket(|s, ino| {
        if s.domain != domain || s.is_stream() != stream || (!stream && s.udplite != lite) {
            return;
        }
        let (backlog, has_rx) = {
            let st = s.st.borrow();
            (st.backlog.as_ref().map(|b| b.borrow().pending.len() as u64), st.rx.is_some())
        };
        let rx = match backlog {
            Some(n) => n,
            None if has_rx => s.read_ready().0 as u64,
            None => 0,
        };
        let st = s.st.borrow();
        let listening = backlog.is_some();
        let state = if listening {
            TCP_LISTEN
        } else if stream && st.connected && (st.shut_rd || st.reset) {
            TCP_CLOSE_WAIT
        } else if st.connected || (!stream && st.peer.is_some()) {
            TCP_ESTABLISHED
        } else {
            TCP_CLOSE
        };
        let start = o.0.len();
        let slot = if stream { i } else { port_of(st.local.as_ref()) as u64 & 127 };
        o.n_right(slot, if stream { 4 } else { 5 }).s(b": ");
        net_addr(o, st.local.as_ref(), v6);
        o.s(b" ");
        net_addr(o, st.peer.as_ref(), v6);
        o.s(b" ").hex_upper(state, 2).s(b" ").hex_upper(0, 8).s(b":").hex_upper(rx, 8);
        o.s(b" 00:00000000 00000000 ").n_right(crate::rt::UID, 5).s(b" ").n_right(0, 8).s(b" ").n(ino);
        if stream {
            // rto, ato, quick ack and ping-pong, cwnd, then a listener's
            // fast-open queue or a connection's ssthresh: Linux's defaults.
            o.s(b" 1 0000000000000000 ");
            o.s(if listening { b"100 0 0 10 0" } else { b"20 4 0 10 -1" });
        } else {
            o.s(b" 2 0000000000000000 0");
        }
        o.pad_to(start, width).s(b"\n");
        i += 1;
    });
    core::mem::take(&mut o.0)
}

fn port_of(a: Option<&Addr>) -> u16 {
    match a {
        Some(Addr::Inet { port, .. }) => *port,
        _ => 0,
    }
}

/// `/proc/net/unix`: the local sockets, in Linux's columns.
fn unix() -> Vec<u8> {
    let o = &mut Out(Vec::new());
    const SO_ACCEPTCON: u64 = 1 << 16;
    const SS_UNCONNECTED: u64 = 1;
    const SS_CONNECTED: u64 = 3;
    o.s(b"Num       RefCount Protocol Flags    Type St Inode Path\n");
    each_socket(|s, ino| {
        if s.domain != AF_UNIX {
            return;
        }
        let st = s.st.borrow();
        let listening = st.backlog.is_some();
        let connected = st.connected || st.peer.is_some();
        o.s(b"0000000000000000: ").hex_upper(2, 8).s(b" ").hex_upper(0, 8).s(b" ");
        o.hex_upper(if listening { SO_ACCEPTCON } else { 0 }, 8).s(b" ").hex_upper(s.ty as u64, 4).s(b" ");
        o.hex_upper(if connected { SS_CONNECTED } else { SS_UNCONNECTED }, 2).s(b" ");
        o.n_right(ino, 5);
        if let Some(Addr::Unix(path)) = &st.local {
            // A path with its NUL, or a NUL and an abstract name.
            match path.split_first() {
                Some((0, name)) => {
                    o.s(b" @").s(name);
                }
                Some(_) => {
                    o.s(b" ").s(path.split(|&c| c == 0).next().unwrap_or(&[]));
                }
                None => {}
            }
        }
        o.s(b"\n");
    });
    core::mem::take(&mut o.0)
}
