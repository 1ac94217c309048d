//! Data on sockets: send and receive with addresses (sendto, recvfrom,
//! sendmsg, recvmsg and their batches), control messages (SCM_RIGHTS,
//! SCM_CREDENTIALS) and write(2)'s path. Every length a program gives is
//! bounded as Linux bounds it.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::errno::*;
use crate::file::{OpenFile, Socket, O_NONBLOCK};
use crate::sock::{self, Cred, IpMeta, Passed, Received, Rights, AF_INET6, AF_UNIX, SOCK_DGRAM, SOCK_SEQPACKET};
use crate::sock::{ECONNREFUSED, EDESTADDRREQ, EMSGSIZE, ENOBUFS, ENOTCONN, SOCK_STREAM};
use crate::sock_addr::{self as names, socket_of};
use crate::socket::cred;
use crate::sys_fs::SysResult;
use crate::uaccess::*;

const MSG_OOB: u64 = 0x1;
const MSG_PEEK: u64 = 0x2;
const MSG_CTRUNC: u32 = 0x8;
const MSG_TRUNC: u64 = 0x20;
const MSG_DONTWAIT: u64 = 0x40;
const MSG_WAITALL: u64 = 0x100;
const MSG_ERRQUEUE: u64 = 0x2000;
const MSG_NOSIGNAL: u64 = 0x4000;
const MSG_CMSG_CLOEXEC: u64 = 0x4000_0000;
const UIO_MAXIOV: u64 = 1024;
/// Most descriptors one message passes (Linux's SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;
/// Most control bytes a send takes (Linux's `optmem_max`).
const CONTROL_MAX: u64 = 20480;
const SOL_SOCKET: u32 = 1;
const SCM_RIGHTS: u32 = 1;
const SCM_CREDENTIALS: u32 = 2;
const MSGHDR: u64 = 56;
const MMSGHDR: u64 = 64;
const SOL_IP: u32 = 0;
const IP_TOS: u32 = 1;
const IP_TTL: u32 = 2;
const IP_PKTINFO: u32 = 8;
const IP_RECVTTL: u64 = 12;
const IP_RECVTOS: u64 = 13;
const SOL_IPV6: u32 = 41;
const IPV6_UNICAST_HOPS: u64 = 16;
const IPV6_RECVPKTINFO: u64 = 49;
const IPV6_PKTINFO: u32 = 50;
const IPV6_RECVHOPLIMIT: u64 = 51;
const IPV6_HOPLIMIT: u32 = 52;
const IPV6_RECVTCLASS: u64 = 66;
const IPV6_TCLASS: u32 = 67;
/// The interface every datagram here comes in on: `lo`'s index.
const LOOPBACK_INDEX: i32 = 1;
/// The hop limit (TTL) a datagram leaves with unless told otherwise.
const DEFAULT_HOPS: u8 = 64;

/// What a send carries besides its data: passed files and credentials
/// (local sockets), and an IP datagram's hop limit and traffic class
/// (its control messages' `IPV6_HOPLIMIT`/`IP_TTL`, `IPV6_TCLASS`/`IP_TOS`;
/// None: the socket's own).
struct Extras {
    rights: Option<Rights>,
    cred: Cred,
    hops: Option<u8>,
    tclass: Option<u8>,
}

impl Extras {
    /// A plain send's: the caller's credentials, nothing else.
    fn plain() -> Extras {
        Extras { rights: None, cred: cred(), hops: None, tclass: None }
    }
}

/// The hop limit and traffic class an IP datagram from `s` to `dst`
/// leaves with.
fn ip_meta(s: &Socket, x: &Extras, dst: [u8; 16]) -> IpMeta {
    let (level, hops_opt, tclass_opt) = if s.domain == AF_INET6 {
        (SOL_IPV6 as u64, IPV6_UNICAST_HOPS, IPV6_TCLASS as u64)
    } else {
        (SOL_IP as u64, IP_TTL as u64, IP_TOS as u64)
    };
    // -1 (or nothing set) is the default; the options keep what was set.
    let hops = s.option(level, hops_opt).and_then(|v| u8::try_from(v).ok()).unwrap_or(DEFAULT_HOPS);
    let tclass = s.option(level, tclass_opt).and_then(|v| u8::try_from(v).ok()).unwrap_or(0);
    IpMeta { hops: x.hops.unwrap_or(hops), tclass: x.tclass.unwrap_or(tclass), dst }
}

fn nonblock(f: &OpenFile, flags: u64) -> bool {
    flags & MSG_DONTWAIT != 0 || f.flags.get() & O_NONBLOCK != 0
}

/// Sends `data` on `s`, to `dest` if given (the raw address). `f` is the
/// socket's open file where the call has it (a send may bind it).
fn send_on(
    f: Option<&Rc<OpenFile>>,
    s: &Socket,
    data: &[u8],
    dest: Option<&[u8]>,
    x: Extras,
    nonblock: bool,
) -> Result<usize, i64> {
    if s.st.borrow().backlog.is_some() {
        return Err(if s.domain == AF_UNIX { ENOTCONN } else { EPIPE });
    }
    match (s.domain, s.ty) {
        (sock::AF_NETLINK, _) => crate::netlink::send(s, data, dest),
        (_, SOCK_STREAM) => {
            if s.domain == AF_UNIX && dest.is_some() {
                return Err(if s.st.borrow().connected { EISCONN } else { EOPNOTSUPP });
            }
            s.send_stream(data, x.rights, x.cred, nonblock)
        }
        (AF_UNIX, _) => {
            if s.st.borrow().shut_wr {
                return Err(EPIPE);
            }
            if msg_limit(s).is_some_and(|m| data.len() > m) {
                return Err(EMSGSIZE);
            }
            let q = match dest.filter(|_| s.ty == SOCK_DGRAM) {
                Some(b) => {
                    let t = names::find_unix(&names::parse_unix(b)?, SOCK_DGRAM)?;
                    let tst = socket_of(&t)?.st.borrow();
                    // As Linux: a connected socket takes only its peer's.
                    if let Some(peer_q) = &tst.tx {
                        if !s.st.borrow().rx.as_ref().is_some_and(|mine| Rc::ptr_eq(mine, peer_q)) {
                            return Err(EPERM);
                        }
                    }
                    tst.rx.clone().ok_or(ECONNREFUSED)?
                }
                None => s.st.borrow().tx.clone().ok_or(ENOTCONN)?,
            };
            if let Some(f) = f {
                if s.st.borrow().passcred && s.st.borrow().local.is_none() {
                    names::autobind_unix(f, s)?;
                }
            }
            if q.borrow().readers == 0 {
                return Err(if s.ty == SOCK_SEQPACKET { EPIPE } else { ECONNREFUSED });
            }
            let from = s.st.borrow().local.clone();
            let timeo = s.st.borrow().sndtimeo;
            sock::send_msg(&q, data, from, x.rights, x.cred, nonblock, timeo)?;
            Ok(data.len())
        }
        _ => {
            let err = s.take_error();
            if err != 0 {
                return Err(err);
            }
            if msg_limit(s).is_some_and(|m| data.len() > m) {
                return Err(EMSGSIZE);
            }
            let (ip, port) = match dest {
                Some(b) => names::parse_inet(b, s.domain)?.ok_or(EAFNOSUPPORT)?,
                None => match &s.st.borrow().peer {
                    Some(sock::Addr::Inet { ip, port, .. }) => (*ip, *port),
                    _ => return Err(EDESTADDRREQ),
                },
            };
            if port == 0 {
                return Err(EINVAL);
            }
            let to = names::target_ip(ip);
            let target = names::find_inet(s.port_space(), to, port)?;
            if let Some(f) = f {
                names::autobind_inet(f, s, [0; 16])?;
            }
            let Some(t) = target else {
                if dest.is_none() {
                    // As Linux over loopback: the port's refusal is
                    // reported by the next call.
                    s.st.borrow_mut().error = ECONNREFUSED;
                }
                return Ok(data.len());
            };
            let ts = socket_of(&t)?;
            let from = names::source(ts.domain, s.st.borrow().local.as_ref(), to);
            let q = ts.st.borrow().rx.clone();
            match q {
                Some(q) if q.borrow().readers > 0 => sock::send_ip_msg(&q, data, from, ip_meta(s, &x, to))?,
                _ => {}
            }
            Ok(data.len())
        }
    }
}

/// write(2) on a socket (registered with `sock.rs` at start).
pub fn write(s: &Socket, data: &[u8], nonblock: bool) -> Result<usize, i64> {
    send_on(None, s, data, None, Extras::plain(), nonblock)
}

/// The longest message a datagram or packet socket sends (streams: none).
fn msg_limit(s: &Socket) -> Option<usize> {
    match (s.domain, s.ty) {
        (_, SOCK_STREAM) => None,
        (AF_UNIX, _) => Some((s.st.borrow().sndbuf as usize).saturating_sub(32)),
        (AF_INET6, _) => Some(65527),
        _ => Some(65507),
    }
}

fn sigpipe(r: Result<usize, i64>, flags: u64) -> SysResult {
    match r {
        Err(EPIPE) if flags & MSG_NOSIGNAL == 0 => {
            crate::signal::raise(crate::task::SIGPIPE);
            Err(EPIPE)
        }
        r => r.map(|n| n as u64),
    }
}

/// A send with MSG_OOB: urgent data on a stream socket (TCP, and local
/// streams as Linux has them since 5.15). The bytes before the last go
/// as a stream (all of them, or the count a nonblocking send managed),
/// the last as the urgent byte; other sockets have none (EOPNOTSUPP).
fn send_oob(f: &Rc<OpenFile>, s: &Socket, data: &[u8], nonblock: bool) -> Result<usize, i64> {
    if s.ty != SOCK_STREAM {
        return Err(EOPNOTSUPP);
    }
    let Some((&last, before)) = data.split_last() else { return Ok(0) };
    if !before.is_empty() {
        let n = send_on(Some(f), s, before, None, Extras::plain(), nonblock)?;
        if n < before.len() {
            return Ok(n);
        }
    }
    s.send_urgent(last)?;
    Ok(data.len())
}

fn recv_on(s: &Socket, max: usize, flags: u64, nonblock: bool) -> Result<Received, i64> {
    if flags & MSG_OOB != 0 {
        if s.ty != SOCK_STREAM {
            return Err(if s.domain == AF_UNIX { EOPNOTSUPP } else { EINVAL });
        }
        let b = s.take_urgent(flags & MSG_PEEK != 0)?;
        let data = if max == 0 { Vec::new() } else { alloc::vec![b] };
        return Ok(Received { full: data.len(), data, ..Received::default() });
    }
    if flags & MSG_ERRQUEUE != 0 {
        return Err(EAGAIN);
    }
    s.recv(max, flags & MSG_PEEK != 0, flags & MSG_WAITALL != 0, nonblock)
}

/// The sender's address a receive reports (none: length 0).
fn sender(s: &Socket, r: &Received) -> Vec<u8> {
    match (&r.from, s.domain, s.ty) {
        (Some(a), _, _) => names::encode(a),
        (None, AF_UNIX, SOCK_STREAM) => s.st.borrow().peer.as_ref().map(names::encode).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn dest_arg(addr: u64, len: u64) -> Result<Option<&'static [u8]>, i64> {
    if addr == 0 || len == 0 {
        return Ok(None);
    }
    names::read_addr(addr, len).map(Some)
}

/// sendto(2) (and send).
pub fn sys_sendto(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, addrlen: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    if msg_limit(s).is_some_and(|m| len > m as u64) {
        return Err(EMSGSIZE);
    }
    let data = user_bytes(buf, len.min(if s.ty == SOCK_STREAM { sock::SOCK_BUF as u64 } else { len }))?;
    let dest = dest_arg(addr, addrlen)?;
    if flags & MSG_OOB != 0 {
        return sigpipe(send_oob(&f, s, data, nonblock(&f, flags)), flags);
    }
    sigpipe(send_on(Some(&f), s, data, dest, Extras::plain(), nonblock(&f, flags)), flags)
}

/// recvfrom(2) (and recv).
pub fn sys_recvfrom(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, addrlen: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    if addr != 0 && addrlen != 0 && (get_u32(addrlen)? as i32) < 0 {
        return Err(EINVAL);
    }
    let r = recv_on(s, len.min(isize::MAX as u64) as usize, flags, nonblock(&f, flags))?;
    // As Linux: the buffer faults when copied to (what was taken is lost).
    user_bytes_mut(buf, r.data.len() as u64)?.copy_from_slice(&r.data);
    names::put_addr(addr, addrlen, &sender(s, &r))?;
    Ok(if flags & MSG_TRUNC != 0 && s.ty != SOCK_STREAM { r.full } else { r.data.len() } as u64)
}

fn get_u32(va: u64) -> Result<u32, i64> {
    Ok(u32::from_le_bytes(user_bytes(va, 4)?.try_into().map_err(|_| EFAULT)?))
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// A message header's vector: (base, len) pairs and their total (the
/// buffers are checked as they are copied, as Linux does).
fn iovecs(iov: u64, cnt: u64) -> Result<(Vec<(u64, u64)>, u64), i64> {
    if cnt > UIO_MAXIOV {
        return Err(EMSGSIZE);
    }
    let raw = user_bytes(iov, cnt * 16)?;
    let mut v = Vec::new();
    v.try_reserve(cnt as usize).map_err(|_| ENOMEM)?;
    let mut total = 0u64;
    for c in raw.chunks_exact(16) {
        let (base, len) = (word(c, 0), word(c, 8));
        total = total.checked_add(len).filter(|&t| t <= i64::MAX as u64).ok_or(EINVAL)?;
        v.push((base, len));
    }
    Ok((v, total))
}

/// An IP control message's value: an int (-1: the socket's own, as None)
/// within `min..=255`, or for IP_TOS also one byte.
fn ip_value(data: &[u8], min: i32, byte_too: bool) -> Result<Option<u8>, i64> {
    let v = match data.len() {
        4 => i32::from_le_bytes([data[0], data[1], data[2], data[3]]),
        1 if byte_too => i32::from(data[0]),
        _ => return Err(EINVAL),
    };
    match v {
        -1 if min <= 0 => Ok(None),
        _ if (min..=255).contains(&v) => Ok(Some(v as u8)),
        _ => Err(EINVAL),
    }
}

/// What a send's control messages carry: files and credentials, an IP
/// datagram's hop limit and traffic class.
fn control(s: &Socket, ctl: u64, len: u64) -> Result<Extras, i64> {
    let mut files: Vec<Passed> = Vec::new();
    let mut creds = None;
    let (mut hops, mut tclass) = (None, None);
    if len == 0 {
        return Ok(Extras::plain());
    }
    if len > CONTROL_MAX {
        // Linux's answer when it cannot allocate the buffer.
        return Err(ENOMEM);
    }
    let b = user_bytes(ctl, len)?;
    let mut off = 0usize;
    while off + 16 <= b.len() {
        let clen = word(b, off) as usize;
        if clen < 16 || clen > b.len() - off {
            return Err(EINVAL);
        }
        let level = u32::from_le_bytes(b[off + 8..off + 12].try_into().map_err(|_| EINVAL)?);
        let ty = u32::from_le_bytes(b[off + 12..off + 16].try_into().map_err(|_| EINVAL)?);
        let data = &b[off + 16..off + clen];
        if level == SOL_SOCKET {
            if s.domain != AF_UNIX {
                return Err(EINVAL);
            }
            match ty {
                SCM_RIGHTS => {
                    let n = data.len() / 4;
                    if files.len() + n > SCM_MAX_FD {
                        return Err(EINVAL);
                    }
                    files.try_reserve(n).map_err(|_| ENOMEM)?;
                    for c in data.chunks_exact(4) {
                        let fd = i32::from_le_bytes(c.try_into().map_err(|_| EINVAL)?);
                        if fd < 0 {
                            return Err(EBADF);
                        }
                        let file: Passed = crate::fds::get(fd as u64)?;
                        files.push(file);
                    }
                }
                SCM_CREDENTIALS => {
                    if data.len() != 12 {
                        return Err(EINVAL);
                    }
                    let v = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                    let (me, c) = (cred(), Cred { pid: v(0), uid: v(4), gid: v(8) });
                    if c != me {
                        return Err(EPERM);
                    }
                    creds = Some(c);
                }
                _ => return Err(EINVAL),
            }
        } else if s.domain != AF_UNIX && s.ty == SOCK_DGRAM {
            // Those of a datagram's IP header; others are not acted on.
            match (level, ty, s.domain == AF_INET6) {
                (SOL_IPV6, IPV6_HOPLIMIT, true) => hops = ip_value(data, 0, false)?,
                // -1 here is not the socket's class but 0xff (Linux keeps
                // it as given, and the header's byte takes its low bits).
                (SOL_IPV6, IPV6_TCLASS, true) => tclass = Some(ip_value(data, -1, false)?.unwrap_or(0xff)),
                (SOL_IP, IP_TTL, false) => hops = ip_value(data, 1, false)?,
                (SOL_IP, IP_TOS, false) => tclass = ip_value(data, 0, true)?,
                _ => {}
            }
        }
        off += (clen + 7) & !7;
    }
    let rights = if files.is_empty() { None } else { Some(Rights::new(files, crate::fds::max_fds())?) };
    Ok(Extras { rights, cred: creds.unwrap_or_else(cred), hops, tclass })
}

/// A `struct msghdr`'s fields.
struct Header {
    name: u64,
    namelen: u64,
    iov: u64,
    iovlen: u64,
    ctl: u64,
    ctllen: u64,
}

fn header(msg: u64) -> Result<Header, i64> {
    let h = user_bytes(msg, MSGHDR)?;
    Ok(Header {
        name: word(h, 0),
        namelen: word(h, 8) & 0xffff_ffff,
        iov: word(h, 16),
        iovlen: word(h, 24),
        ctl: word(h, 32),
        ctllen: word(h, 40),
    })
}

fn sendmsg_one(fd: u64, msg: u64, flags: u64) -> Result<usize, i64> {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    let Header { name, namelen, iov, iovlen, ctl, ctllen } = header(msg)?;
    let (v, total) = iovecs(iov, iovlen)?;
    let dest = dest_arg(name, namelen)?;
    let x = control(s, ctl, ctllen)?;
    // A stream takes at most a buffer's worth at a time; a datagram is
    // bounded by its socket type (checked when sent).
    if msg_limit(s).is_some_and(|m| total > m as u64) {
        return Err(EMSGSIZE);
    }
    let cap = if s.ty == SOCK_STREAM { total.min(sock::SOCK_BUF as u64) } else { total };
    let mut data = Vec::new();
    data.try_reserve(cap as usize).map_err(|_| ENOBUFS)?;
    for (base, len) in v {
        let take = len.min(cap - data.len() as u64);
        data.extend_from_slice(user_bytes(base, take)?);
        if data.len() as u64 == cap {
            break;
        }
    }
    let r = if flags & MSG_OOB != 0 {
        send_oob(&f, s, &data, nonblock(&f, flags))
    } else {
        send_on(Some(&f), s, &data, dest, x, nonblock(&f, flags))
    };
    match r {
        Err(EPIPE) if flags & MSG_NOSIGNAL == 0 => {
            crate::signal::raise(crate::task::SIGPIPE);
            Err(EPIPE)
        }
        r => r,
    }
}

/// sendmsg(2).
pub fn sys_sendmsg(fd: u64, msg: u64, flags: u64) -> SysResult {
    sendmsg_one(fd, msg, flags).map(|n| n as u64)
}

/// Appends control message (level, type, data) at `used` in the
/// program's buffer (`ctl`, `len`); false when it was cut short (then,
/// as Linux, its length says what was written).
fn put_cmsg(ctl: u64, len: u64, used: &mut u64, (level, ty): (u32, u32), data: &[u8]) -> Result<bool, i64> {
    let room = len - *used;
    if room < 16 {
        return Ok(false);
    }
    let full = 16 + data.len() as u64;
    let n = full.min(room);
    let mut b = Vec::new();
    b.try_reserve(full as usize).map_err(|_| ENOMEM)?;
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&level.to_le_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(data);
    user_bytes_mut(ctl + *used, n)?.copy_from_slice(&b[..n as usize]);
    *used += ((full + 7) & !7).min(room);
    Ok(full <= room)
}

fn recvmsg_one(fd: u64, msg: u64, flags: u64) -> Result<usize, i64> {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    let Header { name, namelen, iov, iovlen, ctl, ctllen } = header(msg)?;
    if (namelen as i32) < 0 || (ctllen as i64) < 0 {
        return Err(EINVAL);
    }
    let (v, total) = iovecs(iov, iovlen)?;
    let r = recv_on(s, total as usize, flags, nonblock(&f, flags))?;
    let mut at = 0;
    for (base, len) in v {
        if at == r.data.len() {
            break;
        }
        let n = (len as usize).min(r.data.len() - at);
        user_bytes_mut(base, n as u64)?.copy_from_slice(&r.data[at..at + n]);
        at += n;
    }
    let from = sender(s, &r);
    let mut out_namelen = 0u64;
    if name != 0 {
        let n = (namelen as usize).min(from.len());
        user_bytes_mut(name, n as u64)?.copy_from_slice(&from[..n]);
        out_namelen = from.len() as u64;
    }
    let mut used = 0u64;
    let mut whole = true;
    if s.domain == AF_UNIX && s.st.borrow().passcred {
        let c = r.cred;
        let mut d = [0u8; 12];
        d[..4].copy_from_slice(&c.pid.to_le_bytes());
        d[4..8].copy_from_slice(&c.uid.to_le_bytes());
        d[8..].copy_from_slice(&c.gid.to_le_bytes());
        whole &= put_cmsg(ctl, ctllen, &mut used, (SOL_SOCKET, SCM_CREDENTIALS), &d)?;
    }
    if !r.rights.is_empty() {
        let n = r.rights.len();
        let room = ctllen - used;
        let fit = if room > 16 { ((room - 16) / 4) as usize } else { 0 };
        let mut fds = Vec::new();
        let cloexec = flags & MSG_CMSG_CLOEXEC != 0;
        for file in r.rights.into_iter().take(fit) {
            let Ok(file) = Rc::downcast::<OpenFile>(file) else { continue };
            match crate::fds::install(file, cloexec, 0) {
                Ok(fd) => fds.extend_from_slice(&(fd as u32).to_le_bytes()),
                Err(_) => break,
            }
        }
        whole &= fds.len() / 4 == n;
        if !fds.is_empty() {
            whole &= put_cmsg(ctl, ctllen, &mut used, (SOL_SOCKET, SCM_RIGHTS), &fds)?;
        }
    }
    if s.domain != AF_UNIX && s.ty == SOCK_DGRAM {
        // In Linux's order: where it came in, hop limit (TTL), traffic
        // class (TOS).
        let on = |level: u32, name: u64| s.option(level as u64, name).is_some_and(|v| v != 0);
        let int = |v: u8| i32::from(v).to_le_bytes();
        let index = LOOPBACK_INDEX.to_le_bytes();
        if s.domain == AF_INET6 {
            if on(SOL_IPV6, IPV6_RECVPKTINFO) {
                // struct in6_pktinfo: the destination, the interface.
                let mut d = [0u8; 20];
                d[..16].copy_from_slice(&r.ip.dst);
                d[16..].copy_from_slice(&index);
                whole &= put_cmsg(ctl, ctllen, &mut used, (SOL_IPV6, IPV6_PKTINFO), &d)?;
            }
            if on(SOL_IPV6, IPV6_RECVHOPLIMIT) {
                whole &= put_cmsg(ctl, ctllen, &mut used, (SOL_IPV6, IPV6_HOPLIMIT), &int(r.ip.hops))?;
            }
            if on(SOL_IPV6, IPV6_RECVTCLASS) {
                whole &= put_cmsg(ctl, ctllen, &mut used, (SOL_IPV6, IPV6_TCLASS), &int(r.ip.tclass))?;
            }
        } else {
            if on(SOL_IP, IP_PKTINFO as u64) {
                // struct in_pktinfo: the interface, the local address
                // (the destination, over loopback) and the destination.
                let mut d = [0u8; 12];
                d[..4].copy_from_slice(&index);
                d[4..8].copy_from_slice(&r.ip.dst[12..]);
                d[8..].copy_from_slice(&r.ip.dst[12..]);
                whole &= put_cmsg(ctl, ctllen, &mut used, (SOL_IP, IP_PKTINFO), &d)?;
            }
            if on(SOL_IP, IP_RECVTTL) {
                whole &= put_cmsg(ctl, ctllen, &mut used, (SOL_IP, IP_TTL), &int(r.ip.hops))?;
            }
            if on(SOL_IP, IP_RECVTOS) {
                whole &= put_cmsg(ctl, ctllen, &mut used, (SOL_IP, IP_TOS), &[r.ip.tclass])?;
            }
        }
    }
    let mut mflags = 0u32;
    if r.full > r.data.len() {
        mflags |= MSG_TRUNC as u32;
    }
    if !whole {
        mflags |= MSG_CTRUNC;
    }
    let h = user_bytes_mut(msg, MSGHDR)?;
    h[8..12].copy_from_slice(&(out_namelen as u32).to_le_bytes());
    h[40..48].copy_from_slice(&used.to_le_bytes());
    h[48..52].copy_from_slice(&mflags.to_le_bytes());
    Ok(if flags & MSG_TRUNC != 0 && s.ty != SOCK_STREAM { r.full } else { r.data.len() })
}

/// recvmsg(2).
pub fn sys_recvmsg(fd: u64, msg: u64, flags: u64) -> SysResult {
    recvmsg_one(fd, msg, flags).map(|n| n as u64)
}

/// sendmmsg(2): messages in turn until one fails.
pub fn sys_sendmmsg(fd: u64, vec: u64, vlen: u64, flags: u64) -> SysResult {
    batch(vec, vlen, |i, hdr| sendmsg_one(fd, hdr, if i > 0 { flags | MSG_DONTWAIT } else { flags }))
}

/// recvmmsg(2): what is there after the first message (as with
/// MSG_WAITFORONE; the time-out is not needed then).
pub fn sys_recvmmsg(fd: u64, vec: u64, vlen: u64, flags: u64) -> SysResult {
    batch(vec, vlen, |i, hdr| recvmsg_one(fd, hdr, if i > 0 { flags | MSG_DONTWAIT } else { flags }))
}

fn batch(vec: u64, vlen: u64, mut one: impl FnMut(u64, u64) -> Result<usize, i64>) -> SysResult {
    let vlen = vlen.min(UIO_MAXIOV);
    user_bytes_mut(vec, vlen * MMSGHDR)?;
    let mut done = 0;
    while done < vlen {
        let hdr = vec + done * MMSGHDR;
        match one(done, hdr) {
            Ok(n) => put_user(hdr + MSGHDR, (n as u32).to_le_bytes())?,
            Err(e) if done == 0 => return Err(e),
            Err(e) => {
                crate::task::unblock_if(e);
                break;
            }
        }
        done += 1;
    }
    Ok(done)
}
