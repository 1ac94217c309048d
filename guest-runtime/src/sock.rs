//! Local sockets' state and buffers, below the descriptor table: a
//! socket ([`Socket`]: its addresses, its queues, a listener's backlog),
//! the queues that carry bytes or datagrams with their sender, passed
//! descriptors ([`Rights`]) and credentials, and what poll sees. Names,
//! system calls and descriptors are the socket handlers' business
//! (`socket.rs`, `sock_addr.rs`, `sock_msg.rs`); the scheduler waits on
//! a socket through [`Wait::Until`].
//!
//! ~950 lines in one file: the socket, its queues (stream, datagram and
//! urgent data, buffer sizes, the mark) and what poll sees all work on
//! the queue type, whose fields stay private to it.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::RefCell;

use crate::errno::*;
use crate::rt::Global;
use crate::wait::{self, Wait};

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const AF_NETLINK: u16 = 16;
pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;
pub const SOCK_SEQPACKET: u16 = 5;
pub const SOL_SOCKET: u64 = 1;
pub const SO_OOBINLINE: u64 = 10;

pub const EDESTADDRREQ: i64 = 89;
pub const EMSGSIZE: i64 = 90;
pub const EPROTOTYPE: i64 = 91;
pub const ESOCKTNOSUPPORT: i64 = 94;
pub const EADDRINUSE: i64 = 98;
pub const ENETUNREACH: i64 = 101;
pub const ECONNRESET: i64 = 104;
pub const ENOBUFS: i64 = 105;
pub const ENOTCONN: i64 = 107;
pub const ETOOMANYREFS: i64 = 109;
pub const ECONNREFUSED: i64 = 111;
pub const EINPROGRESS: i64 = 115;

const POLLIN: u16 = 0x1;
const POLLPRI: u16 = 0x2;
const POLLOUT: u16 = 0x4;
const POLLERR: u16 = 0x8;
const POLLHUP: u16 = 0x10;
const POLLRDHUP: u16 = 0x2000;

/// A socket buffer's size (Linux's `wmem_default`/`rmem_default`): what a
/// queue holds and what SO_SNDBUF/SO_RCVBUF report until set.
pub const SOCK_BUF: usize = 212_992;
/// Datagrams a local datagram queue holds (Linux's `max_dgram_qlen` of
/// 10, and the one it lets over).
const UNIX_DGRAM_QLEN: usize = 11;

/// A socket address.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Addr {
    /// AF_UNIX: `sun_path` as reported (a path with its NUL, or NUL and
    /// an abstract name).
    Unix(Vec<u8>),
    /// AF_INET or AF_INET6 (`v6`); an IPv4 address is kept IPv4-mapped.
    Inet { v6: bool, ip: [u8; 16], port: u16 },
    /// AF_NETLINK: a port id (0: the kernel).
    Netlink(u32),
}

/// Who sent something (SCM_CREDENTIALS, SO_PEERCRED).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Cred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// An open file passed with SCM_RIGHTS (typed by the handlers:
/// `Rc<OpenFile>`).
pub type Passed = Rc<dyn Any>;

/// Open files passed and not received yet. All of them together are
/// bounded.
pub struct Rights(Vec<Passed>);

/// Descriptors in flight in all sockets.
static IN_FLIGHT: Global<usize> = Global::new(0);

impl Rights {
    /// ETOOMANYREFS when more than `limit` would be in flight.
    pub fn new(files: Vec<Passed>, limit: usize) -> Result<Rights, Errno> {
        let n = IN_FLIGHT.get();
        if *n + files.len() > limit {
            return Err(ETOOMANYREFS);
        }
        *n += files.len();
        Ok(Rights(files))
    }

    /// The files, received.
    pub fn take(mut self) -> Vec<Passed> {
        *IN_FLIGHT.get() -= self.0.len();
        core::mem::take(&mut self.0)
    }
}

impl Drop for Rights {
    fn drop(&mut self) {
        *IN_FLIGHT.get() -= self.0.len();
    }
}

type Errno = i64;

/// One write or datagram in a queue.
struct Seg {
    data: Vec<u8>,
    off: usize,
    from: Option<Addr>,
    rights: Option<Rights>,
    cred: Cred,
    ip: IpMeta,
}

/// An IP datagram's hop limit (IPv4's TTL), traffic class (IPv4's TOS)
/// and destination address (IPv4-mapped for IPv4) as sent, which a
/// receiver asks for with `IPV6_RECVHOPLIMIT`, `IPV6_RECVTCLASS`,
/// `IPV6_RECVPKTINFO`, `IP_RECVTTL`, `IP_RECVTOS` or `IP_PKTINFO`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct IpMeta {
    pub hops: u8,
    pub tclass: u8,
    pub dst: [u8; 16],
}

/// What a receive took from a queue.
#[derive(Default)]
pub struct Received {
    pub data: Vec<u8>,
    /// A datagram's whole length (longer than `data` when truncated).
    pub full: usize,
    pub from: Option<Addr>,
    /// Passed files (duplicates for a peek).
    pub rights: Vec<Passed>,
    pub cred: Cred,
    pub ip: IpMeta,
}

/// What flows one way: bytes (a stream) or datagrams, their senders and
/// passed files, and who is at the ends.
pub struct Queue {
    segs: VecDeque<Seg>,
    bytes: usize,
    /// Sockets receiving from it (0: sends fail) and sending on a
    /// connection into it (0 on a connection: end of input).
    pub readers: u32,
    pub writers: u32,
    /// Datagrams it holds at most (streams: no count).
    max_msgs: usize,
    /// A full queue drops datagrams (UDP) instead of making senders wait.
    lossy: bool,
    /// The sender closed with input unread: the receiver is told
    /// ECONNRESET once it has read what is here.
    reset: bool,
    /// TCP urgent data: the byte sent with MSG_OOB and not read yet
    /// (outside the stream, as without SO_OOBINLINE).
    urgent: Option<u8>,
    /// A connection's: the sender's SO_SNDBUF and the receiver's
    /// SO_RCVBUF, which bound the bytes in flight together (as Linux's
    /// send and receive buffers do), at most SOCK_BUF.
    pub sndbuf: usize,
    pub rcvbuf: usize,
    /// The receiver set SO_OOBINLINE: urgent data stays in the stream.
    pub oobinline: bool,
    /// A stream's bytes written into it and read from it so far, and the
    /// urgent mark: where in the stream the last urgent byte was sent (a
    /// read stops there, SIOCATMARK says whether the reader is there).
    written: u64,
    read: u64,
    mark: Option<u64>,
    /// The receiving socket's owner (F_SETOWN): urgent data signals it
    /// (SIGURG).
    pub owner: crate::wait::Owner,
}

pub type QueueRef = Rc<RefCell<Queue>>;

/// Linux's SIGURG.
const SIGURG: u32 = 23;

impl Queue {
    fn new(max_msgs: usize, lossy: bool) -> QueueRef {
        Rc::new(RefCell::new(Queue {
            segs: VecDeque::new(),
            bytes: 0,
            readers: 0,
            writers: 0,
            max_msgs,
            lossy,
            reset: false,
            urgent: None,
            sndbuf: SOCK_BUF,
            rcvbuf: SOCK_BUF,
            oobinline: false,
            written: 0,
            read: 0,
            mark: None,
            owner: crate::wait::Owner::default(),
        }))
    }

    /// Bytes it holds at most.
    fn capacity(&self) -> usize {
        (self.sndbuf + self.rcvbuf).min(SOCK_BUF)
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Bytes waiting (FIONREAD); a datagram queue: the next one's length.
    pub fn ready_bytes(&self, stream: bool) -> usize {
        if stream {
            self.bytes
        } else {
            self.segs.front().map_or(0, |s| s.data.len())
        }
    }

    fn full_for(&self, len: usize) -> bool {
        self.segs.len() >= self.max_msgs || (self.bytes > 0 && self.bytes + len > self.capacity())
    }

    /// Drops everything queued (its passed files close), outside the borrow.
    fn purge(q: &QueueRef) {
        let segs = {
            let mut q = q.borrow_mut();
            q.bytes = 0;
            core::mem::take(&mut q.segs)
        };
        drop(segs);
    }

    /// Stream bytes: from consecutive writes, stopping after one that
    /// carried files (and before one, when bytes were taken already).
    fn take_stream(&mut self, max: usize, peek: bool) -> Received {
        let mut r = Received::default();
        let mut i = 0;
        // A read that starts before the urgent mark stops there.
        let max = match self.mark {
            Some(m) if self.read < m => max.min(usize::try_from(m - self.read).unwrap_or(usize::MAX)),
            _ => max,
        };
        while r.data.len() < max && i < self.segs.len() {
            let s = &mut self.segs[i];
            if s.rights.is_some() && !r.data.is_empty() {
                break;
            }
            let n = (max - r.data.len()).min(s.data.len() - s.off);
            r.data.extend_from_slice(&s.data[s.off..s.off + n]);
            r.cred = s.cred;
            let had_rights = s.rights.is_some();
            if peek {
                if let Some(rt) = &s.rights {
                    r.rights = rt.0.clone();
                }
                i += 1;
            } else {
                if let Some(rt) = s.rights.take() {
                    r.rights = rt.take();
                }
                s.off += n;
                self.bytes -= n;
                self.read += n as u64;
                if s.off == s.data.len() {
                    self.segs.pop_front();
                } else {
                    break;
                }
            }
            if had_rights {
                break;
            }
        }
        r.full = r.data.len();
        if self.mark.is_some_and(|m| self.read > m) {
            self.mark = None;
        }
        r
    }

    /// Whether a stream's reader is at the urgent mark (SIOCATMARK).
    pub fn at_mark(&self) -> bool {
        self.mark == Some(self.read)
    }

    /// The next datagram, cut to `max` bytes.
    fn take_msg(&mut self, max: usize, peek: bool) -> Received {
        let Some(s) = self.segs.front_mut() else { return Received::default() };
        let mut r = Received {
            data: s.data[..max.min(s.data.len())].to_vec(),
            full: s.data.len(),
            from: s.from.clone(),
            rights: Vec::new(),
            cred: s.cred,
            ip: s.ip,
        };
        if peek {
            if let Some(rt) = &s.rights {
                r.rights = rt.0.clone();
            }
        } else {
            if let Some(rt) = s.rights.take() {
                r.rights = rt.take();
            }
            self.bytes -= s.data.len();
            self.segs.pop_front();
        }
        r
    }
}

/// One reader (`reader`) or writer fewer at `q`.
fn leave(q: &QueueRef, reader: bool) {
    let mut q = q.borrow_mut();
    let n = if reader { &mut q.readers } else { &mut q.writers };
    *n = n.saturating_sub(1);
}

/// A listener's connections not accepted yet, and how many it keeps.
pub struct Backlog {
    pub pending: VecDeque<Socket>,
    pub max: usize,
}

/// A socket's state.
pub struct State {
    pub local: Option<Addr>,
    pub peer: Option<Addr>,
    /// What this socket receives from (a connection's incoming side; a
    /// datagram socket's own queue).
    pub rx: Option<QueueRef>,
    /// What it sends into on a connection (a connected local datagram
    /// socket: its peer's queue).
    pub tx: Option<QueueRef>,
    /// A listening socket's backlog.
    pub backlog: Option<Rc<RefCell<Backlog>>>,
    pub shut_rd: bool,
    pub shut_wr: bool,
    /// A stream connection was made.
    pub connected: bool,
    /// SO_ERROR: an error not reported yet.
    pub error: i64,
    /// A non-blocking TCP connect said EINPROGRESS: the next connect
    /// reports how it went.
    pub connecting: bool,
    /// TCP: a send found the peer gone (the next one fails, as after
    /// Linux's reset).
    pub reset: bool,
    pub peer_cred: Option<Cred>,
    pub rcvbuf: u32,
    pub sndbuf: u32,
    /// SO_RCVTIMEO and SO_SNDTIMEO (ns; None: wait without end).
    pub rcvtimeo: Option<u64>,
    pub sndtimeo: Option<u64>,
    pub passcred: bool,
    /// SO_LINGER: the seconds a close waits (None: off). Zero makes a
    /// TCP close abortive: the peer sees a reset.
    pub linger: Option<u32>,
    /// Other integer options as set: (level, name, value).
    pub options: Vec<(u64, u64, u32)>,
}

pub struct Socket {
    pub domain: u16,
    pub ty: u16,
    /// A UDP-Lite socket (`IPPROTO_UDPLITE`): UDP's datagrams in a port
    /// space of its own (over loopback, no checksum to cover).
    pub udplite: bool,
    pub st: RefCell<State>,
}

/// `IPPROTO_UDPLITE`; also the port space of UDP-Lite sockets (see
/// [`Socket::port_space`]), apart from TCP's (`SOCK_STREAM`) and UDP's
/// (`SOCK_DGRAM`).
pub const IPPROTO_UDPLITE: u16 = 136;

impl Socket {
    /// A new unconnected socket (a datagram socket gets its queue).
    pub fn new(domain: u16, ty: u16) -> Socket {
        let s = Socket {
            domain,
            ty,
            udplite: false,
            st: RefCell::new(State {
                local: None,
                peer: None,
                rx: None,
                tx: None,
                backlog: None,
                shut_rd: false,
                shut_wr: false,
                connected: false,
                error: 0,
                connecting: false,
                reset: false,
                peer_cred: None,
                rcvbuf: SOCK_BUF as u32,
                sndbuf: SOCK_BUF as u32,
                rcvtimeo: None,
                sndtimeo: None,
                passcred: false,
                linger: None,
                options: Vec::new(),
            }),
        };
        if ty == SOCK_DGRAM || domain == AF_NETLINK {
            let q = s.new_queue();
            q.borrow_mut().readers += 1;
            s.st.borrow_mut().rx = Some(q);
        }
        s
    }

    /// Integer option (`level`, `name`) as the program set it.
    pub fn option(&self, level: u64, name: u64) -> Option<u32> {
        self.st.borrow().options.iter().find(|o| o.0 == level && o.1 == name).map(|o| o.2)
    }

    /// Which sockets share this one's ports: its type's (TCP, UDP), or
    /// UDP-Lite's.
    pub fn port_space(&self) -> u16 {
        if self.udplite {
            IPPROTO_UDPLITE
        } else {
            self.ty
        }
    }

    fn new_queue(&self) -> QueueRef {
        match (self.domain, self.ty) {
            (_, SOCK_STREAM) => Queue::new(usize::MAX, false),
            (AF_UNIX, _) => Queue::new(UNIX_DGRAM_QLEN, false),
            _ => Queue::new(usize::MAX, true),
        }
    }

    /// Connects two fresh sockets of one kind to each other (socketpair,
    /// and a connection and the end a listener accepts). Datagram sockets
    /// keep their own queues and send into each other's.
    pub fn connect_pair(a: &Socket, b: &Socket, a_cred: Cred, b_cred: Cred) {
        let (qa, qb) = if a.ty == SOCK_DGRAM {
            (a.st.borrow().rx.clone(), b.st.borrow().rx.clone())
        } else {
            let (qa, qb) = (a.new_queue(), b.new_queue());
            qa.borrow_mut().readers += 1;
            qb.borrow_mut().readers += 1;
            (Some(qa), Some(qb))
        };
        for (s, rx, tx, cred) in [(a, &qa, &qb, b_cred), (b, &qb, &qa, a_cred)] {
            // Set before the connection (or on a listener, inherited).
            let inline = s.option(SOL_SOCKET, SO_OOBINLINE).is_some_and(|v| v != 0);
            let mut st = s.st.borrow_mut();
            if let Some(tx) = tx {
                let mut tx = tx.borrow_mut();
                tx.writers += 1;
                tx.sndbuf = st.sndbuf as usize;
            }
            if let Some(rx) = rx.as_ref().filter(|_| a.ty != SOCK_DGRAM) {
                let mut rx = rx.borrow_mut();
                rx.rcvbuf = st.rcvbuf as usize;
                rx.oobinline = inline;
            }
            st.rx = rx.clone();
            st.tx = tx.clone();
            st.connected = a.ty != SOCK_DGRAM;
            st.peer_cred = Some(cred);
        }
        wait::notify();
    }

    /// A connected datagram socket's peer: its queue (or none).
    pub fn set_dgram_peer(&self, peer: Option<Addr>, tx: Option<QueueRef>) {
        let old = {
            let mut st = self.st.borrow_mut();
            if let Some(q) = &tx {
                q.borrow_mut().writers += 1;
            }
            st.peer = peer;
            core::mem::replace(&mut st.tx, tx)
        };
        if let Some(q) = old {
            leave(&q, false);
        }
    }

    /// The socket's owner (F_SETOWN): the queue it receives from (its
    /// connection's, now) signals it when urgent data arrives.
    pub fn set_owner(&self, owner: crate::wait::Owner) {
        if let Some(rx) = &self.st.borrow().rx {
            rx.borrow_mut().owner = owner;
        }
    }

    /// TCP urgent data: `byte` goes to the peer outside the stream (the
    /// stream's bytes before it are the caller's to send first); a newer
    /// one replaces one not read yet, as Linux's single urgent byte.
    pub fn send_urgent(&self, byte: u8) -> Result<(), Errno> {
        let st = self.st.borrow();
        let tx = st.tx.as_ref().ok_or(EPIPE)?;
        if tx.borrow().readers == 0 {
            return Err(EPIPE);
        }
        let mut q = tx.borrow_mut();
        // The mark: where the stream is now (a read of what came before
        // stops there).
        q.mark = Some(q.written);
        if q.oobinline {
            // The receiver reads the byte in the stream, at the mark.
            q.segs.try_reserve(1).map_err(|_| ENOBUFS)?;
            q.bytes += 1;
            q.written += 1;
            let seg = Seg {
                data: alloc::vec![byte],
                off: 0,
                from: None,
                rights: None,
                cred: Cred::default(),
                ip: IpMeta::default(),
            };
            q.segs.push_back(seg);
        } else {
            q.urgent = Some(byte);
        }
        let owner = q.owner;
        drop(q);
        drop(st);
        // As Linux's sk_send_sigurg: the receiver's owner learns of it.
        wait::signal_owner(owner, SIGURG, None);
        wait::notify();
        Ok(())
    }

    /// SIOCATMARK: whether a stream's reader is at the urgent mark (None:
    /// not a stream).
    pub fn at_mark(&self) -> Option<bool> {
        if self.ty != SOCK_STREAM {
            return None;
        }
        Some(self.st.borrow().rx.as_ref().is_some_and(|q| q.borrow().at_mark()))
    }

    /// Takes the urgent byte the peer sent (recv MSG_OOB; `peek` leaves
    /// it): EINVAL when there is none, as Linux.
    pub fn take_urgent(&self, peek: bool) -> Result<u8, Errno> {
        let st = self.st.borrow();
        let rx = st.rx.as_ref().ok_or(EINVAL)?;
        let mut q = rx.borrow_mut();
        let b = q.urgent.ok_or(EINVAL)?;
        if !peek {
            q.urgent = None;
        }
        Ok(b)
    }

    /// Whether the connection was reset (by its peer, or after a send
    /// found the peer gone).
    pub fn was_reset(&self) -> bool {
        let st = self.st.borrow();
        st.reset || st.rx.as_ref().is_some_and(|q| q.borrow().reset)
    }

    pub fn is_stream(&self) -> bool {
        // (Netlink sockets are datagram sockets of either type.)
        self.ty != SOCK_DGRAM && self.domain != AF_NETLINK
    }

    /// shutdown(2): the peer sees end of input (SHUT_WR) or EPIPE.
    pub fn shutdown(&self, rd: bool, wr: bool) {
        let mut st = self.st.borrow_mut();
        if rd && !st.shut_rd {
            st.shut_rd = true;
            if let Some(q) = &st.rx {
                leave(q, true);
            }
        }
        if wr && !st.shut_wr {
            st.shut_wr = true;
            if let Some(q) = &st.tx {
                leave(q, false);
            }
        }
        drop(st);
        wait::notify();
    }

    /// Takes the pending error (SO_ERROR).
    pub fn take_error(&self) -> i64 {
        core::mem::take(&mut self.st.borrow_mut().error)
    }

    /// Receives: stream bytes or the next datagram (at most `max` bytes),
    /// end of input as empty data; EAGAIN or a wait when there is
    /// nothing. `waitall`: a stream waits for `max` bytes (or what fits).
    pub fn recv(&self, max: usize, peek: bool, waitall: bool, nonblock: bool) -> Result<Received, Errno> {
        let (rx, shut) = {
            let mut st = self.st.borrow_mut();
            if st.error != 0 && !self.is_stream() {
                return Err(core::mem::take(&mut st.error));
            }
            match &st.rx {
                Some(q) => (q.clone(), st.shut_rd),
                None if self.domain == AF_UNIX && (st.backlog.is_some() || self.ty == SOCK_STREAM) => {
                    return Err(EINVAL)
                }
                None => return Err(ENOTCONN),
            }
        };
        let stream = self.ty == SOCK_STREAM;
        let conn = self.is_stream();
        let want = if waitall && stream && !nonblock { max.min(SOCK_BUF) } else { 1 };
        let q = rx.borrow();
        let eof = shut || (conn && q.writers == 0);
        let ready = if stream {
            q.bytes >= want || (q.bytes > 0 && q.segs.iter().any(|s| s.rights.is_some()))
        } else {
            !q.is_empty()
        };
        if !ready && !eof {
            if stream && max == 0 {
                return Ok(Received::default());
            }
            if nonblock {
                return Err(EAGAIN);
            }
            drop(q);
            let cond = rx.clone();
            let timeo = self.st.borrow().rcvtimeo;
            return wait_until(timeo, move || {
                let q = cond.borrow();
                q.bytes >= want
                    || (!stream && !q.is_empty())
                    || (q.bytes > 0 && q.segs.iter().any(|s| s.rights.is_some()))
                    || q.readers == 0
                    || (conn && q.writers == 0)
            });
        }
        drop(q);
        let mut q = rx.borrow_mut();
        if q.is_empty() && q.reset && conn {
            q.reset = false;
            drop(q);
            self.st.borrow_mut().reset = true;
            return Err(ECONNRESET);
        }
        let r = if stream { q.take_stream(max, peek) } else { q.take_msg(max, peek) };
        drop(q);
        if !peek {
            wait::notify();
        }
        Ok(r)
    }

    /// Sends stream bytes (with passed files): as many as fit, waiting
    /// (unless `nonblock`) until all fit when the queue could hold them.
    pub fn send_stream(&self, data: &[u8], rights: Option<Rights>, cred: Cred, nonblock: bool) -> Result<usize, Errno> {
        let tx = {
            let st = self.st.borrow();
            if st.shut_wr {
                return Err(EPIPE);
            }
            st.tx.clone().ok_or(if self.domain == AF_UNIX { ENOTCONN } else { EPIPE })?
        };
        let reset = {
            let st = self.st.borrow();
            st.rx.as_ref().is_some_and(|q| core::mem::take(&mut q.borrow_mut().reset))
        };
        if reset {
            self.st.borrow_mut().reset = true;
            return Err(ECONNRESET);
        }
        let mut q = tx.borrow_mut();
        if q.readers == 0 {
            // TCP: the first send to a closed peer goes out; its reset
            // fails the next.
            let mut st = self.st.borrow_mut();
            if self.domain != AF_UNIX && !st.reset {
                st.reset = true;
                st.error = EPIPE;
                return Ok(data.len());
            }
            st.error = 0;
            return Err(EPIPE);
        }
        if data.is_empty() {
            return Ok(0);
        }
        if !crate::heap::has_room() {
            return Err(ENOBUFS);
        }
        let cap = q.capacity();
        let room = cap.saturating_sub(q.bytes);
        let need = data.len().clamp(1, cap);
        if room < need {
            if nonblock && room == 0 {
                return Err(EAGAIN);
            }
            if !nonblock {
                drop(q);
                let cond = tx.clone();
                let timeo = self.st.borrow().sndtimeo;
                return wait_until(timeo, move || {
                    let q = cond.borrow();
                    q.capacity().saturating_sub(q.bytes) >= need.min(q.capacity()) || q.readers == 0
                });
            }
        }
        let n = data.len().min(room);
        if n == 0 {
            return Ok(0);
        }
        match q.segs.back_mut() {
            Some(last) if rights.is_none() && last.rights.is_none() && last.cred == cred => {
                // Drop what was read before growing (a reader that keeps
                // up with a writer never empties the last write).
                if last.off > 0 && last.off >= last.data.len() / 2 {
                    last.data.drain(..last.off);
                    last.off = 0;
                }
                last.data.try_reserve(n).map_err(|_| ENOBUFS)?;
                last.data.extend_from_slice(&data[..n]);
            }
            _ => {
                let mut bytes = Vec::new();
                bytes.try_reserve(n).map_err(|_| ENOBUFS)?;
                bytes.extend_from_slice(&data[..n]);
                q.segs.try_reserve(1).map_err(|_| ENOBUFS)?;
                let ip = IpMeta::default();
                q.segs.push_back(Seg { data: bytes, off: 0, from: None, rights, cred, ip });
            }
        }
        q.bytes += n;
        q.written += n as u64;
        drop(q);
        wait::notify();
        Ok(n)
    }

    /// Receives a stream's bytes into `out` (read(2)): passed files close.
    pub fn read(&self, out: &mut [u8], nonblock: bool) -> Result<usize, Errno> {
        let r = self.recv(out.len(), false, false, nonblock)?;
        out[..r.data.len()].copy_from_slice(&r.data);
        Ok(r.data.len())
    }

    /// What poll(2) sees.
    pub fn poll(&self) -> u16 {
        let st = self.st.borrow();
        if let Some(b) = &st.backlog {
            return if b.borrow().pending.is_empty() { 0 } else { POLLIN };
        }
        let mut r = 0;
        if st.error != 0 {
            r |= POLLERR;
        }
        if let Some(rx) = &st.rx {
            let q = rx.borrow();
            if q.reset {
                r |= POLLERR | POLLHUP;
            }
            if q.urgent.is_some() {
                r |= POLLPRI;
            }
            if !q.is_empty() || st.shut_rd {
                r |= POLLIN;
            }
            if st.shut_rd || (self.is_stream() && q.writers == 0) {
                r |= POLLIN | POLLRDHUP;
            }
        }
        let tx_open = match &st.tx {
            Some(tx) => {
                let q = tx.borrow();
                if q.readers == 0 || st.shut_wr {
                    // As Linux: writable (a write says EPIPE), no error.
                    r |= POLLOUT;
                    false
                } else {
                    if !q.full_for(1) || q.lossy {
                        r |= POLLOUT;
                    }
                    true
                }
            }
            None => {
                if !st.shut_wr {
                    r |= POLLOUT;
                }
                false
            }
        };
        let rcv_shut = st.shut_rd || st.rx.as_ref().is_none_or(|q| q.borrow().writers == 0);
        let hup = if self.domain != AF_UNIX && st.connected {
            // TCP: both directions shut here, or reset.
            (rcv_shut && st.shut_wr) || st.reset
        } else {
            self.is_stream() && !tx_open && rcv_shut
        };
        if hup {
            r |= POLLHUP;
        }
        r
    }

    /// Bytes ready to read (FIONREAD), and whether a read would not block.
    pub fn read_ready(&self) -> (usize, bool) {
        let st = self.st.borrow();
        match &st.rx {
            Some(q) => {
                let q = q.borrow();
                (
                    q.ready_bytes(self.ty == SOCK_STREAM),
                    !q.is_empty() || st.shut_rd || (self.is_stream() && q.writers == 0),
                )
            }
            None => (0, true),
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let st = self.st.get_mut();
        let (rx, tx, backlog) = (st.rx.take(), st.tx.take(), st.backlog.take());
        let mut unread = false;
        if let Some(rx) = rx {
            let last = {
                let mut q = rx.borrow_mut();
                if !st.shut_rd {
                    q.readers = q.readers.saturating_sub(1);
                }
                unread = !q.is_empty();
                q.readers == 0
            };
            if last {
                Queue::purge(&rx);
            }
        }
        if let Some(tx) = tx {
            if !st.shut_wr {
                leave(&tx, false);
            }
            // As Linux: closing a connection with input unread resets it,
            // and so does a TCP close lingering zero seconds.
            let abort = st.linger == Some(0) && self.domain != AF_UNIX;
            if (unread || abort) && self.ty != SOCK_DGRAM {
                tx.borrow_mut().reset = true;
            }
        }
        drop(backlog);
        wait::notify();
    }
}

/// Sends a datagram (or a sequenced packet) into `q`, from `from`. A
/// full queue drops it when lossy (UDP), else EAGAIN or a wait.
pub fn send_msg(
    q: &QueueRef,
    data: &[u8],
    from: Option<Addr>,
    rights: Option<Rights>,
    cred: Cred,
    nonblock: bool,
    timeo: Option<u64>,
) -> Result<(), Errno> {
    let seg = Seg { data: Vec::new(), off: 0, from, rights, cred, ip: IpMeta::default() };
    push_msg(q, data, seg, nonblock, timeo)
}

/// Queues IP datagram `data` from `from`, sent with `ip`'s hop limit and
/// traffic class (a full queue drops it, as UDP does).
pub fn send_ip_msg(q: &QueueRef, data: &[u8], from: Option<Addr>, ip: IpMeta) -> Result<(), Errno> {
    let seg = Seg { data: Vec::new(), off: 0, from, rights: None, cred: Cred::default(), ip };
    push_msg(q, data, seg, true, None)
}

/// Queues message `data` with what `seg` says of it.
fn push_msg(q: &QueueRef, data: &[u8], mut seg: Seg, nonblock: bool, timeo: Option<u64>) -> Result<(), Errno> {
    let mut qb = q.borrow_mut();
    if qb.full_for(data.len()) {
        if qb.lossy {
            return Ok(());
        }
        if nonblock {
            return Err(EAGAIN);
        }
        drop(qb);
        let cond = q.clone();
        let len = data.len();
        return wait_until::<()>(timeo, move || {
            let q = cond.borrow();
            !q.full_for(len) || q.readers == 0
        });
    }
    if !crate::heap::has_room() {
        return Err(ENOBUFS);
    }
    let mut bytes = Vec::new();
    bytes.try_reserve(data.len()).map_err(|_| ENOBUFS)?;
    bytes.extend_from_slice(data);
    qb.segs.try_reserve(1).map_err(|_| ENOBUFS)?;
    qb.bytes += bytes.len();
    seg.data = bytes;
    qb.segs.push_back(seg);
    drop(qb);
    wait::notify();
    Ok(())
}

/// How a plain write(2) sends on a socket, and the deadline a call run
/// again after a wake keeps: registered at start by the handlers
/// (`socket.rs`), which know names, the writer and the scheduler.
type WriteFn = fn(&Socket, &[u8], bool) -> Result<usize, Errno>;

struct Hooks {
    write: WriteFn,
    restart_deadline: fn() -> Option<u64>,
}

fn unregistered_write(_: &Socket, _: &[u8], _: bool) -> Result<usize, Errno> {
    Err(EPIPE)
}

static HOOKS: Global<Hooks> = Global::new(Hooks { write: unregistered_write, restart_deadline: || None });

/// Registers the handlers' write and the scheduler's kept deadline.
pub fn register(write: WriteFn, restart_deadline: fn() -> Option<u64>) {
    *HOOKS.get() = Hooks { write, restart_deadline };
}

/// write(2) on a socket (`nonblock`: O_NONBLOCK).
pub fn write(s: &Socket, data: &[u8], nonblock: bool) -> Result<usize, Errno> {
    (HOOKS.get().write)(s, data, nonblock)
}

/// Blocks the current task until `cond` holds, the call running again
/// then; with a time-out (`timeo` ns: SO_RCVTIMEO, SO_SNDTIMEO), EAGAIN
/// once it passes.
pub fn wait_until<T>(timeo: Option<u64>, cond: impl Fn() -> bool + 'static) -> Result<T, Errno> {
    let kept = (HOOKS.get().restart_deadline)();
    let now = crate::time::monotonic_ns();
    let deadline = timeo.map(|t| kept.unwrap_or(now.saturating_add(t)));
    if deadline.is_some_and(|d| d <= now) {
        return Err(EAGAIN);
    }
    wait::block(Wait::Until(Rc::new(cond)), deadline, true)?;
    Err(wait::BLOCKED)
}
