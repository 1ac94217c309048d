//! Sockets without a network: local (AF_UNIX) stream, datagram and
//! sequenced-packet sockets by path, abstract name or socketpair, and
//! IPv4/IPv6 TCP and UDP between this sandbox's own processes (every
//! address is local; nothing leaves the VM). This file: creating,
//! naming, connecting, accepting and options; data in `sock_msg.rs`,
//! names in `sock_addr.rs`, buffers and poll in `sock.rs`.

use alloc::rc::Rc;

use crate::errno::*;
use crate::file::{self, OpenFile, Socket, O_CLOEXEC, O_NONBLOCK};
use crate::sock::{
    Addr, Cred, AF_INET, AF_INET6, AF_UNIX, EINPROGRESS, ESOCKTNOSUPPORT, SOCK_BUF, SOCK_DGRAM, SOCK_SEQPACKET,
    SOCK_STREAM,
};
use crate::sock::{ECONNREFUSED, ENOBUFS, ENOTCONN, SOL_SOCKET, SO_OOBINLINE};
use crate::sock_addr::{self as names, socket_of, UnixName};
use crate::sys_fs::SysResult;
use crate::uaccess::*;

const SOCK_TYPE_MASK: u64 = 0xf;
pub const SOCK_NONBLOCK: u64 = O_NONBLOCK as u64;
pub const SOCK_CLOEXEC: u64 = O_CLOEXEC as u64;
const IPPROTO_TCP: u64 = 6;
const IPPROTO_UDP: u64 = 17;
const IPPROTO_UDPLITE: u64 = crate::sock::IPPROTO_UDPLITE as u64;
/// UDP-Lite's own options (`UDPLITE_SEND_CSCOV`, `UDPLITE_RECV_CSCOV`:
/// kept, as there is no checksum to cover).
const SOL_UDPLITE: u64 = IPPROTO_UDPLITE;
const SOL_IP: u64 = 0;
const SOL_IPV6: u64 = 41;
const SO_TYPE: u64 = 3;
const SO_ERROR: u64 = 4;
const SO_SNDBUF: u64 = 7;
const SO_RCVBUF: u64 = 8;
const SO_LINGER: u64 = 13;
const SO_PASSCRED: u64 = 16;
const SO_PEERCRED: u64 = 17;
const SO_RCVLOWAT: u64 = 18;
const SO_SNDLOWAT: u64 = 19;
const SO_RCVTIMEO: u64 = 20;
const SO_SNDTIMEO: u64 = 21;
const SO_ACCEPTCONN: u64 = 30;
const SO_PROTOCOL: u64 = 38;
const SO_DOMAIN: u64 = 39;
const EDOM: i64 = 33;
/// Linux's `somaxconn`.
const SOMAXCONN: usize = 4096;

/// A socket time-out from a `timeval` (SO_RCVTIMEO): None for none (zero),
/// EDOM for microseconds out of range; a negative one is already over.
fn timeval_ns(b: &[u8]) -> Result<Option<u64>, i64> {
    let word = |i: usize| i64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let (sec, usec) = (word(0), word(8));
    if !(0..1_000_000).contains(&usec) {
        return Err(EDOM);
    }
    if sec < 0 {
        return Ok(Some(0));
    }
    let ns = (sec as u64).saturating_mul(1_000_000_000).saturating_add(usec as u64 * 1000);
    Ok((ns != 0).then_some(ns))
}

/// The deadline a call run again after a wake keeps (see `sock::wait_until`).
pub fn restart_deadline() -> Option<u64> {
    crate::task::current().restart_deadline.take()
}

/// The calling process's credentials.
pub fn cred() -> Cred {
    let pid = crate::process::sys_getpid().unwrap_or(0) as u32;
    Cred { pid, uid: crate::rt::UID as u32, gid: crate::rt::UID as u32 }
}

fn socket_type(ty: u64) -> Result<(u16, u32), i64> {
    if ty & !(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    Ok(((ty & SOCK_TYPE_MASK) as u16, (ty & SOCK_NONBLOCK) as u32))
}

fn install(s: Socket, ty: u64) -> SysResult {
    crate::fds::install(file::socket_file(s, (ty & SOCK_NONBLOCK) as u32), ty & SOCK_CLOEXEC != 0, 0)
}

/// socket(2): AF_UNIX stream, datagram and seqpacket sockets; TCP, UDP
/// and UDP-Lite over IPv4 and IPv6; NETLINK_ROUTE (`netlink.rs`).
pub fn sys_socket(domain: u64, ty: u64, proto: u64) -> SysResult {
    let (base, _) = socket_type(ty)?;
    let domain = u16::try_from(domain).map_err(|_| EAFNOSUPPORT)?;
    match domain {
        AF_UNIX => {
            if !matches!(base, SOCK_STREAM | SOCK_DGRAM | SOCK_SEQPACKET) {
                return Err(ESOCKTNOSUPPORT);
            }
            if proto != 0 && proto != AF_UNIX as u64 {
                return Err(EPROTONOSUPPORT);
            }
        }
        AF_INET | AF_INET6 => match (base, proto) {
            (SOCK_STREAM, 0 | IPPROTO_TCP) | (SOCK_DGRAM, 0 | IPPROTO_UDP) => {}
            (SOCK_DGRAM, IPPROTO_UDPLITE) => {
                let mut s = Socket::new(domain, base);
                s.udplite = true;
                return install(s, ty);
            }
            (SOCK_STREAM | SOCK_DGRAM, _) => return Err(EPROTONOSUPPORT),
            (3, _) => return Err(EPERM), // SOCK_RAW
            _ => return Err(ESOCKTNOSUPPORT),
        },
        crate::sock::AF_NETLINK => match (base, proto) {
            (2 | 3, 0) => {} // SOCK_DGRAM or SOCK_RAW, NETLINK_ROUTE
            (2 | 3, _) => return Err(EPROTONOSUPPORT),
            _ => return Err(ESOCKTNOSUPPORT),
        },
        _ => return Err(EAFNOSUPPORT),
    }
    install(Socket::new(domain, base), ty)
}

/// socketpair(2): AF_UNIX, any of its types.
pub fn sys_socketpair(domain: u64, ty: u64, proto: u64, fds: u64) -> SysResult {
    let (base, nb) = socket_type(ty)?;
    match domain as u16 {
        AF_UNIX if domain <= u16::MAX as u64 => {}
        AF_INET | AF_INET6 if domain <= u16::MAX as u64 => return Err(EOPNOTSUPP),
        _ => return Err(EAFNOSUPPORT),
    }
    if !matches!(base, SOCK_STREAM | SOCK_DGRAM | SOCK_SEQPACKET) {
        return Err(ESOCKTNOSUPPORT);
    }
    if proto != 0 && proto != AF_UNIX as u64 {
        return Err(EPROTONOSUPPORT);
    }
    user_bytes_mut(fds, 8)?;
    let (a, b) = (Socket::new(AF_UNIX, base), Socket::new(AF_UNIX, base));
    let c = cred();
    Socket::connect_pair(&a, &b, c, c);
    crate::sys_fs::install_pair(file::socket_file(a, nb), file::socket_file(b, nb), ty & SOCK_CLOEXEC != 0, fds)
}

/// bind(2).
pub fn sys_bind(fd: u64, addr: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    let b = names::read_addr(addr, len)?;
    if s.domain == AF_UNIX {
        names::bind_unix(&f, s, names::parse_unix(b)?)?;
    } else if s.domain == crate::sock::AF_NETLINK {
        crate::netlink::bind(s, b)?;
    } else {
        let (ip, port) = match names::parse_inet(b, s.domain)? {
            Some(a) => a,
            // AF_UNSPEC with INADDR_ANY binds IPv4 as AF_INET does.
            None if s.domain == AF_INET && b.len() >= 8 && b[4..8] == [0; 4] => {
                names::parse_inet(&[&AF_INET.to_le_bytes()[..], &b[2..]].concat(), AF_INET)?.ok_or(EINVAL)?
            }
            None => return Err(EAFNOSUPPORT),
        };
        names::bind_inet(&f, s, ip, port)?;
    }
    Ok(0)
}

/// listen(2).
pub fn sys_listen(fd: u64, backlog: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    if s.ty == SOCK_DGRAM {
        return Err(EOPNOTSUPP);
    }
    if s.st.borrow().connected {
        return Err(EINVAL);
    }
    if s.st.borrow().local.is_none() {
        if s.domain == AF_UNIX {
            return Err(EINVAL);
        }
        names::autobind_inet(&f, s, [0; 16])?;
    }
    let max = if backlog as u32 > SOMAXCONN as u32 { SOMAXCONN } else { backlog as u32 as usize };
    let mut st = s.st.borrow_mut();
    match &st.backlog {
        Some(b) => b.borrow_mut().max = max,
        None => {
            st.backlog = Some(Rc::new(core::cell::RefCell::new(crate::sock::Backlog {
                pending: alloc::collections::VecDeque::new(),
                max,
            })));
            // As Linux: a listener's peer credentials are its own.
            st.peer_cred = Some(cred());
        }
    }
    drop(st);
    crate::wait::notify();
    Ok(0)
}

fn nonblocking(f: &OpenFile) -> bool {
    f.flags.get() & O_NONBLOCK != 0
}

/// connect(2).
pub fn sys_connect(fd: u64, addr: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    let b = names::read_addr(addr, len)?;
    match (s.domain, s.ty) {
        // To the kernel (port 0) only: nothing to remember.
        (crate::sock::AF_NETLINK, _) => {
            if b.len() >= 8 && b[4..8] == [0; 4] {
                Ok(0)
            } else {
                Err(ECONNREFUSED)
            }
        }
        (AF_UNIX, SOCK_DGRAM) => {
            if names::family(b)? == 0 {
                s.set_dgram_peer(None, None);
                return Ok(0);
            }
            let name = names::parse_unix(b)?;
            let target = names::find_unix(&name, SOCK_DGRAM)?;
            let t = socket_of(&target)?;
            if s.st.borrow().passcred && s.st.borrow().local.is_none() {
                names::autobind_unix(&f, s)?;
            }
            let (peer, rx) = {
                let st = t.st.borrow();
                (st.local.clone(), st.rx.clone())
            };
            s.set_dgram_peer(peer, rx);
            Ok(0)
        }
        (AF_UNIX, _) => {
            let name = names::parse_unix(b)?;
            if matches!(name, UnixName::Unnamed) {
                return Err(EINVAL);
            }
            check_connectable(s)?;
            let target = names::find_unix(&name, s.ty)?;
            if s.st.borrow().passcred && s.st.borrow().local.is_none() {
                names::autobind_unix(&f, s)?;
            }
            let t = socket_of(&target)?;
            let peer = t.st.borrow().local.clone();
            let mine = s.st.borrow().local.clone();
            connect_to(&f, s, t, peer.clone(), mine, peer)?;
            Ok(0)
        }
        (_, SOCK_DGRAM) => {
            let Some((ip, port)) = names::parse_inet(b, s.domain)? else {
                s.st.borrow_mut().peer = None;
                return Ok(0);
            };
            let to = names::target_ip(ip);
            names::find_inet(s.port_space(), to, port)?;
            names::autobind_inet(&f, s, to)?;
            let mut st = s.st.borrow_mut();
            // As Linux: a socket bound to a wildcard takes the address
            // its datagrams now leave from (getsockname, /proc/net).
            if let Some(Addr::Inet { ip: mine, port: p, .. }) = &st.local {
                if names::unspecified(mine) {
                    let p = *p;
                    st.local = Some(names::inet(s.domain, to, p));
                }
            }
            st.peer = Some(names::inet(s.domain, to, port));
            Ok(0)
        }
        _ => {
            let Some((ip, port)) = names::parse_inet(b, s.domain)? else { return Err(EAFNOSUPPORT) };
            if core::mem::take(&mut s.st.borrow_mut().connecting) {
                // As Linux: the call after EINPROGRESS says how it went.
                return match s.take_error() {
                    0 => Ok(0),
                    e => Err(e),
                };
            }
            check_connectable(s)?;
            let to = names::target_ip(ip);
            let target = names::find_inet(SOCK_STREAM, to, port)?;
            let refused = match &target {
                Some(t) => socket_of(t)?.st.borrow().backlog.is_none(),
                None => true,
            };
            if refused {
                if nonblocking(&f) {
                    // As Linux over loopback: the refusal comes later.
                    let mut st = s.st.borrow_mut();
                    st.error = ECONNREFUSED;
                    st.connecting = true;
                    return Err(EINPROGRESS);
                }
                return Err(ECONNREFUSED);
            }
            let Some(target) = target else { return Err(ECONNREFUSED) };
            let t = socket_of(&target)?;
            names::autobind_inet(&f, s, to)?;
            let mine = s.st.borrow().local.clone();
            let server_local = names::source(t.domain, t.st.borrow().local.as_ref(), to);
            let client_side = names::source(t.domain, mine.as_ref(), to);
            connect_to(&f, s, t, server_local, client_side, Some(names::inet(s.domain, to, port)))?;
            if nonblocking(&f) {
                s.st.borrow_mut().connecting = true;
                return Err(EINPROGRESS);
            }
            Ok(0)
        }
    }
}

fn check_connectable(s: &Socket) -> Result<(), i64> {
    let st = s.st.borrow();
    if st.connected {
        return Err(EISCONN);
    }
    if st.backlog.is_some() {
        return Err(EINVAL);
    }
    Ok(())
}

/// Queues a connection from `s` to listener `t`: the end it will accept
/// is named `server_local` with peer `server_peer`; `s`'s peer becomes
/// `peer`. A full backlog makes the caller wait (EAGAIN when
/// non-blocking).
fn connect_to(
    f: &OpenFile,
    s: &Socket,
    t: &Socket,
    server_local: Option<Addr>,
    server_peer: Option<Addr>,
    peer: Option<Addr>,
) -> Result<(), i64> {
    let (backlog, t_cred) = {
        let st = t.st.borrow();
        (st.backlog.clone().ok_or(ECONNREFUSED)?, st.peer_cred.unwrap_or_default())
    };
    {
        let b = backlog.borrow();
        if b.pending.len() > b.max {
            if nonblocking(f) {
                return Err(EAGAIN);
            }
            drop(b);
            let weak = Rc::downgrade(&backlog);
            let timeo = s.st.borrow().sndtimeo;
            return crate::sock::wait_until(timeo, move || {
                weak.upgrade().is_none_or(|b| {
                    let b = b.borrow();
                    b.pending.len() <= b.max
                })
            });
        }
    }
    if !crate::heap::has_room() {
        return Err(ENOBUFS);
    }
    let server = Socket::new(t.domain, t.ty);
    {
        // As Linux: an accepted socket has its listener's buffer sizes
        // and options.
        let (ts, mut ss) = (t.st.borrow(), server.st.borrow_mut());
        (ss.sndbuf, ss.rcvbuf) = (ts.sndbuf, ts.rcvbuf);
        ss.options.try_reserve(ts.options.len()).map_err(|_| ENOMEM)?;
        ss.options.extend_from_slice(&ts.options);
    }
    Socket::connect_pair(s, &server, cred(), t_cred);
    {
        let mut ss = server.st.borrow_mut();
        ss.local = server_local;
        ss.peer = server_peer;
        ss.passcred = t.st.borrow().passcred;
    }
    s.st.borrow_mut().peer = peer;
    let mut b = backlog.borrow_mut();
    b.pending.try_reserve(1).map_err(|_| ENOMEM)?;
    b.pending.push_back(server);
    drop(b);
    crate::wait::notify();
    Ok(())
}

/// accept4(2) (and accept).
pub fn sys_accept4(fd: u64, addr: u64, len: u64, flags: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    if s.ty == SOCK_DGRAM {
        return Err(EOPNOTSUPP);
    }
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let backlog = s.st.borrow().backlog.clone().ok_or(EINVAL)?;
    if addr != 0 && len != 0 {
        let room = i32::from_le_bytes(user_bytes(len, 4)?.try_into().map_err(|_| EFAULT)?);
        if room < 0 {
            return Err(EINVAL);
        }
    }
    let next = backlog.borrow_mut().pending.pop_front();
    let Some(conn) = next else {
        if nonblocking(&f) {
            return Err(EAGAIN);
        }
        let weak = Rc::downgrade(&backlog);
        let timeo = s.st.borrow().rcvtimeo;
        return crate::sock::wait_until(timeo, move || weak.upgrade().is_none_or(|b| !b.borrow().pending.is_empty()));
    };
    crate::wait::notify();
    let peer = names::name_or_unnamed(conn.domain, conn.st.borrow().peer.as_ref());
    let newfd = install(conn, flags)?;
    names::put_addr(addr, len, &peer)?;
    Ok(newfd)
}

/// shutdown(2).
pub fn sys_shutdown(fd: u64, how: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    if how > 2 {
        return Err(EINVAL);
    }
    if s.domain != AF_UNIX && s.ty == SOCK_STREAM && !s.st.borrow().connected {
        return Err(ENOTCONN);
    }
    s.shutdown(how != 1, how != 0);
    Ok(0)
}

/// getsockname(2).
pub fn sys_getsockname(fd: u64, addr: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    let b = names::name_or_unnamed(s.domain, s.st.borrow().local.as_ref());
    put_addr_checked(addr, len, &b)
}

/// getpeername(2).
pub fn sys_getpeername(fd: u64, addr: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    let st = s.st.borrow();
    let connected = st.connected || st.tx.is_some() || (s.ty == SOCK_DGRAM && st.peer.is_some());
    // A TCP connection its peer reset is closed, as Linux's state says.
    if !connected || (s.domain != AF_UNIX && (st.peer.is_none() || s.was_reset())) {
        return Err(ENOTCONN);
    }
    let b = names::name_or_unnamed(s.domain, st.peer.as_ref());
    drop(st);
    put_addr_checked(addr, len, &b)
}

fn put_addr_checked(addr: u64, len: u64, b: &[u8]) -> SysResult {
    if len == 0 {
        return Err(EFAULT);
    }
    names::put_addr(addr, len, b).map(|_| 0)
}

// --- options ---------------------------------------------------------------------------

/// getsockopt(2): SOL_SOCKET options; TCP, IP and IPv6 options of IP
/// sockets as set (or Linux's defaults).
pub fn sys_getsockopt(fd: u64, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    let room = i32::from_le_bytes(user_bytes(len, 4)?.try_into().map_err(|_| EFAULT)?);
    if room < 0 {
        return Err(EINVAL);
    }
    let mut buf = [0u8; 16];
    let size = option_value(s, level, name, &mut buf)?;
    let n = (room as usize).min(size);
    user_bytes_mut(val, n as u64)?.copy_from_slice(&buf[..n]);
    put_user(len, (n as u32).to_le_bytes())?;
    Ok(0)
}

fn option_value(s: &Socket, level: u64, name: u64, buf: &mut [u8; 16]) -> Result<usize, i64> {
    let int = |buf: &mut [u8; 16], v: u32| {
        buf[..4].copy_from_slice(&v.to_le_bytes());
        Ok(4)
    };
    check_level(s, level)?;
    let st = s.st.borrow();
    let set = st.options.iter().find(|o| o.0 == level && o.1 == name).map(|o| o.2);
    if level != SOL_SOCKET {
        let default = match (level, name) {
            (IPPROTO_TCP, 2) => 65483, // TCP_MAXSEG over loopback
            (IPPROTO_TCP, 4) => 7200,  // TCP_KEEPIDLE
            (IPPROTO_TCP, 5) => 75,    // TCP_KEEPINTVL
            (IPPROTO_TCP, 6) => 9,     // TCP_KEEPCNT
            (SOL_IP, 2) | (SOL_IPV6, 16) => 64,
            _ => 0,
        };
        return int(buf, set.unwrap_or(default));
    }
    match name {
        SO_TYPE => int(buf, s.ty as u32),
        SO_ERROR => {
            drop(st);
            int(buf, s.take_error() as u32)
        }
        SO_SNDBUF => int(buf, st.sndbuf),
        SO_RCVBUF => int(buf, st.rcvbuf),
        SO_DOMAIN => int(buf, s.domain as u32),
        SO_PROTOCOL => int(
            buf,
            match (s.domain, s.ty) {
                (AF_UNIX, _) => 0,
                (_, SOCK_STREAM) => IPPROTO_TCP as u32,
                _ if s.udplite => IPPROTO_UDPLITE as u32,
                _ => IPPROTO_UDP as u32,
            },
        ),
        SO_ACCEPTCONN => int(buf, st.backlog.is_some() as u32),
        SO_PASSCRED => int(buf, st.passcred as u32),
        SO_RCVLOWAT | SO_SNDLOWAT => int(buf, set.unwrap_or(1)),
        SO_PEERCRED => {
            // IP sockets have no peer credentials.
            let c =
                st.peer_cred.filter(|_| s.domain == AF_UNIX).unwrap_or(Cred { pid: 0, uid: u32::MAX, gid: u32::MAX });
            buf[..4].copy_from_slice(&c.pid.to_le_bytes());
            buf[4..8].copy_from_slice(&c.uid.to_le_bytes());
            buf[8..12].copy_from_slice(&c.gid.to_le_bytes());
            Ok(12)
        }
        SO_LINGER => {
            // struct linger: l_onoff, l_linger.
            let (on, secs) = st.linger.map_or((0, 0), |s| (1u32, s));
            buf[..4].copy_from_slice(&on.to_le_bytes());
            buf[4..8].copy_from_slice(&secs.to_le_bytes());
            Ok(8)
        }
        SO_RCVTIMEO | SO_SNDTIMEO => {
            let t = if name == SO_RCVTIMEO { st.rcvtimeo } else { st.sndtimeo }.unwrap_or(0);
            buf[..8].copy_from_slice(&(t / 1_000_000_000).to_le_bytes());
            buf[8..].copy_from_slice(&(t % 1_000_000_000 / 1000).to_le_bytes());
            Ok(16)
        }
        1..=80 => int(buf, set.unwrap_or(0)),
        _ => Err(ENOPROTOOPT),
    }
}

fn check_level(s: &Socket, level: u64) -> Result<(), i64> {
    match level {
        SOL_SOCKET => Ok(()),
        _ if s.domain == AF_UNIX => Err(EOPNOTSUPP),
        IPPROTO_TCP if s.ty != SOCK_STREAM => Err(EOPNOTSUPP),
        IPPROTO_UDP | SOL_UDPLITE if s.ty != SOCK_DGRAM => Err(EOPNOTSUPP),
        SOL_UDPLITE if !s.udplite => Err(ENOPROTOOPT),
        SOL_IPV6 if s.domain != AF_INET6 => Err(ENOPROTOOPT),
        IPPROTO_TCP | IPPROTO_UDP | SOL_UDPLITE | SOL_IP | SOL_IPV6 => Ok(()),
        _ => Err(ENOPROTOOPT),
    }
}

/// setsockopt(2): options are checked and kept (buffers as Linux sizes
/// them); time-outs and the like change nothing here.
pub fn sys_setsockopt(fd: u64, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    check_level(s, level)?;
    if (len as i32) < 0 || len > 4096 {
        return Err(EINVAL);
    }
    let need = match (level, name) {
        (SOL_SOCKET, SO_LINGER) => 8,
        (SOL_SOCKET, SO_RCVTIMEO | SO_SNDTIMEO) => 16,
        (SOL_SOCKET, _) => 4,
        _ => 1,
    };
    if len < need {
        return Err(EINVAL);
    }
    let b = user_bytes(val, len)?;
    let mut v = [0u8; 4];
    let n = b.len().min(4);
    v[..n].copy_from_slice(&b[..n]);
    let v = u32::from_le_bytes(v);
    let mut st = s.st.borrow_mut();
    if level == SOL_SOCKET {
        match name {
            SO_TYPE | SO_ERROR | SO_DOMAIN | SO_PROTOCOL | SO_ACCEPTCONN | SO_PEERCRED => return Err(ENOPROTOOPT),
            SO_SNDBUF => {
                st.sndbuf = (v.min(SOCK_BUF as u32) * 2).max(4608);
                // A connection's bytes in flight follow (see Queue).
                if let Some(q) = st.tx.as_ref().filter(|_| s.ty != SOCK_DGRAM) {
                    q.borrow_mut().sndbuf = st.sndbuf as usize;
                }
                return Ok(0);
            }
            SO_RCVBUF => {
                st.rcvbuf = (v.min(SOCK_BUF as u32) * 2).max(2304);
                if let Some(q) = st.rx.as_ref().filter(|_| s.ty != SOCK_DGRAM) {
                    q.borrow_mut().rcvbuf = st.rcvbuf as usize;
                }
                return Ok(0);
            }
            SO_PASSCRED => {
                st.passcred = v != 0;
                return Ok(0);
            }
            SO_OOBINLINE => {
                // Kept below as well (getsockopt); urgent data sent here
                // from now on stays in the stream.
                if let Some(q) = st.rx.as_ref().filter(|_| s.ty == SOCK_STREAM) {
                    q.borrow_mut().oobinline = v != 0;
                }
            }
            SO_LINGER => {
                let secs = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                st.linger = (v != 0).then_some(secs.min(i32::MAX as u32));
                return Ok(0);
            }
            SO_RCVTIMEO | SO_SNDTIMEO => {
                let t = timeval_ns(b)?;
                if name == SO_RCVTIMEO {
                    st.rcvtimeo = t;
                } else {
                    st.sndtimeo = t;
                }
                return Ok(0);
            }
            1..=80 => {}
            _ => return Err(ENOPROTOOPT),
        }
    }
    match st.options.iter_mut().find(|o| o.0 == level && o.1 == name) {
        Some(o) => o.2 = v,
        None => {
            st.options.try_reserve(1).map_err(|_| ENOMEM)?;
            st.options.push((level, name, v));
        }
    }
    Ok(0)
}
