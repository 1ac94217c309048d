//! Sockets, as far as programs need them without a network: connected
//! pairs of local stream sockets (socketpair), which event loops such as
//! Python's asyncio use to wake themselves. `socket()` itself finds no
//! address family to offer.

use crate::errno::*;
use crate::file::{self, FileKind, OpenFile, Socket, O_CLOEXEC, O_NONBLOCK, PIPE_CAPACITY};
use crate::sys_fs::SysResult;
use crate::uaccess::*;

const AF_UNIX: u64 = 1;
const SOCK_STREAM: u64 = 1;
const SOCK_TYPE_MASK: u64 = 0xf;
const SOCK_NONBLOCK: u64 = O_NONBLOCK as u64;
const SOCK_CLOEXEC: u64 = O_CLOEXEC as u64;
const MSG_PEEK: u64 = 0x2;
const MSG_DONTWAIT: u64 = 0x40;
const MSG_NOSIGNAL: u64 = 0x4000;
const SOL_SOCKET: u64 = 1;
const SO_TYPE: u64 = 3;
const SO_ERROR: u64 = 4;
const SO_SNDBUF: u64 = 7;
const SO_RCVBUF: u64 = 8;
const SO_DOMAIN: u64 = 39;
const SO_PROTOCOL: u64 = 38;

/// socket(2): no network, and no named local sockets either.
pub fn sys_socket(_domain: u64, _ty: u64, _proto: u64) -> SysResult {
    Err(EAFNOSUPPORT)
}

/// socketpair(2): AF_UNIX, SOCK_STREAM only.
pub fn sys_socketpair(domain: u64, ty: u64, proto: u64, fds: u64) -> SysResult {
    if domain != AF_UNIX {
        return Err(EAFNOSUPPORT);
    }
    if ty & SOCK_TYPE_MASK != SOCK_STREAM || ty & !(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EOPNOTSUPP);
    }
    if proto != 0 {
        return Err(EPROTONOSUPPORT);
    }
    user_bytes_mut(fds, 8)?;
    let (a, b) = file::new_socket_pair((ty & SOCK_NONBLOCK) as u32);
    crate::sys_fs::install_pair(a, b, ty & SOCK_CLOEXEC != 0, fds)
}

fn socket_of(f: &OpenFile) -> Result<&Socket, i64> {
    match &f.kind {
        FileKind::Socket(s) => Ok(s),
        _ => Err(ENOTSOCK),
    }
}

/// sendto(2) (and send): a connected pair takes no address.
pub fn sys_sendto(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, _addrlen: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    if addr != 0 {
        return Err(EISCONN);
    }
    let data = user_bytes(buf, len)?;
    let nonblock = flags & MSG_DONTWAIT != 0 || f.flags.get() & O_NONBLOCK != 0;
    let r = if s.shut_wr.get() { Err(EPIPE) } else { file::pipe_write(&s.tx, data, nonblock) };
    match r {
        Err(EPIPE) if flags & MSG_NOSIGNAL == 0 => {
            crate::signal::raise(crate::task::SIGPIPE);
            Err(EPIPE)
        }
        r => r.map(|n| n as u64),
    }
}

/// recvfrom(2) (and recv): the peer has no address to report.
pub fn sys_recvfrom(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, addrlen: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    let out = user_bytes_mut(buf, len)?;
    if addr != 0 && addrlen != 0 {
        put_user(addrlen, 0u32.to_le_bytes())?;
    }
    if s.shut_rd.get() {
        return Ok(0);
    }
    let nonblock = flags & MSG_DONTWAIT != 0 || f.flags.get() & O_NONBLOCK != 0;
    file::pipe_read(&s.rx, out, nonblock, flags & MSG_PEEK != 0).map(|n| n as u64)
}

/// shutdown(2).
pub fn sys_shutdown(fd: u64, how: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let s = socket_of(&f)?;
    match how {
        0 => s.shutdown(true, false),
        1 => s.shutdown(false, true),
        2 => s.shutdown(true, true),
        _ => return Err(EINVAL),
    }
    Ok(0)
}

/// getsockopt(2): the few SOL_SOCKET options programs ask about.
pub fn sys_getsockopt(fd: u64, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    socket_of(&f)?;
    if level != SOL_SOCKET {
        return Err(ENOPROTOOPT);
    }
    let v: u32 = match name {
        SO_TYPE => SOCK_STREAM as u32,
        SO_ERROR | SO_PROTOCOL => 0,
        SO_DOMAIN => AF_UNIX as u32,
        SO_SNDBUF | SO_RCVBUF => PIPE_CAPACITY as u32,
        _ => return Err(ENOPROTOOPT),
    };
    let room = u32::from_le_bytes(user_bytes(len, 4)?.try_into().map_err(|_| EFAULT)?);
    if room < 4 {
        return Err(EINVAL);
    }
    put_user(val, v.to_le_bytes())?;
    put_user(len, 4u32.to_le_bytes())?;
    Ok(0)
}

/// setsockopt(2): SOL_SOCKET options are accepted (buffers, timeouts and
/// the like change nothing here).
pub fn sys_setsockopt(fd: u64, level: u64, _name: u64, _val: u64, _len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    socket_of(&f)?;
    if level != SOL_SOCKET {
        return Err(ENOPROTOOPT);
    }
    Ok(0)
}

/// getsockname(2) / getpeername(2): an unnamed local socket.
pub fn sys_getsockname(fd: u64, addr: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    socket_of(&f)?;
    let room = u32::from_le_bytes(user_bytes(len, 4)?.try_into().map_err(|_| EFAULT)?);
    if room >= 2 {
        put_user(addr, (AF_UNIX as u16).to_le_bytes())?;
    }
    put_user(len, 2u32.to_le_bytes())?;
    Ok(0)
}
