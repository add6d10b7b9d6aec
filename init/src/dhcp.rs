//! DHCPv4 on the first Ethernet NIC: DISCOVER, OFFER, REQUEST, ACK (RFC 2131), messages by the
//! `dhcproto` crate; then renewal at T1 for as long as the VM runs. The socket is plain UDP bound
//! to the interface (SO_BINDTODEVICE), with the broadcast flag set so that the server's replies
//! reach a NIC that has no address yet.
use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, Message, MessageType, OptionCode,
};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

/// What the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// Seconds.
    pub lease_time: u32,
    pub renew_after: u32,
}

pub struct Client {
    socket: UdpSocket,
    mac: [u8; 6],
    xid: u32,
}

impl Client {
    pub fn new(interface: &str, mac: [u8; 6]) -> Result<Client, String> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))
            .map_err(|e| format!("binding the DHCP client port: {e}"))?;
        bind_to_device(&socket, interface)?;
        socket
            .set_broadcast(true)
            .map_err(|e| format!("allowing broadcast: {e}"))?;
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| format!("setting a timeout: {e}"))?;
        let xid = u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ std::process::id();
        Ok(Client { socket, mac, xid })
    }

    /// DISCOVER → OFFER → REQUEST → ACK, a few tries.
    pub fn acquire(&mut self) -> Result<Lease, String> {
        let mut last = String::from("no answer");
        for _ in 0..5 {
            self.xid = self.xid.wrapping_add(1);
            let offer = match self.exchange(&self.discover(), MessageType::Offer) {
                Ok(m) => m,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let server = server_of(&offer).unwrap_or(Ipv4Addr::BROADCAST);
            let request = self.request(offer.yiaddr(), Some(server), None);
            match self.exchange(&request, MessageType::Ack) {
                Ok(ack) => return lease_of(&ack),
                Err(e) => last = e,
            }
        }
        Err(format!("no DHCP lease: {last}"))
    }

    /// REQUEST for the address we hold (RENEWING: ciaddr set, no server id).
    pub fn renew(&mut self, lease: &Lease) -> Result<Lease, String> {
        self.xid = self.xid.wrapping_add(1);
        let request = self.request(lease.address, None, Some(lease.address));
        let ack = self.exchange(&request, MessageType::Ack)?;
        lease_of(&ack)
    }

    fn base(&self, kind: MessageType, ciaddr: Ipv4Addr) -> Message {
        let mut msg = Message::new_with_id(
            self.xid,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        msg.set_flags(Flags::default().set_broadcast());
        msg.opts_mut().insert(DhcpOption::MessageType(kind));
        msg.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
        ]));
        msg
    }

    fn discover(&self) -> Message {
        self.base(MessageType::Discover, Ipv4Addr::UNSPECIFIED)
    }

    fn request(
        &self,
        address: Ipv4Addr,
        server: Option<Ipv4Addr>,
        ciaddr: Option<Ipv4Addr>,
    ) -> Message {
        let mut msg = self.base(
            MessageType::Request,
            ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
        );
        if ciaddr.is_none() {
            msg.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(address));
        }
        if let Some(server) = server {
            msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        }
        msg
    }

    /// Send `msg` to the servers' port and wait for a reply of `want` with our xid.
    fn exchange(&self, msg: &Message, want: MessageType) -> Result<Message, String> {
        let mut buf = Vec::new();
        msg.encode(&mut Encoder::new(&mut buf))
            .map_err(|e| format!("encoding a DHCP message: {e}"))?;
        self.socket
            .send_to(&buf, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
            .map_err(|e| format!("sending a DHCP message: {e}"))?;
        let mut reply = [0u8; 1500];
        loop {
            let n = match self.socket.recv(&mut reply) {
                Ok(n) => n,
                Err(e) => return Err(format!("waiting for a DHCP {want:?}: {e}")),
            };
            let Ok(answer) = Message::decode(&mut Decoder::new(&reply[..n])) else {
                continue;
            };
            if answer.xid() != self.xid || answer.chaddr().get(..6) != Some(&self.mac[..]) {
                continue;
            }
            match answer.opts().msg_type() {
                Some(t) if t == want => return Ok(answer),
                Some(MessageType::Nak) => return Err("the DHCP server said NAK".into()),
                _ => continue,
            }
        }
    }
}

/// SO_BINDTODEVICE: send and receive on this interface only, before it has an address.
fn bind_to_device(socket: &UdpSocket, interface: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: the option value is the name's bytes, with its length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            interface.as_ptr().cast(),
            interface.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "binding the DHCP socket to {interface}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn server_of(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// The lease an ACK grants.
pub fn lease_of(ack: &Message) -> Result<Lease, String> {
    let opts = ack.opts();
    let mask = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => *m,
        _ => Ipv4Addr::new(255, 255, 255, 0),
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let lease_time = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 3600,
    };
    let renew_after = match opts.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) => *t,
        _ => lease_time / 2,
    };
    if ack.yiaddr().is_unspecified() {
        return Err("the DHCP server granted no address".into());
    }
    Ok(Lease {
        address: ack.yiaddr(),
        prefix_len: u32::from(mask).count_ones() as u8,
        router,
        dns,
        server: server_of(ack).unwrap_or(Ipv4Addr::UNSPECIFIED),
        lease_time,
        renew_after: renew_after.max(10),
    })
}

/// What a new lease asks of the interface, given the lease it holds (None when none is in
/// place, e.g. configuring it failed).
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Address, prefix, router and DNS servers as they are: nothing to do.
    Keep,
    /// Configure the new lease, after removing `remove`, the old address, when it changed (an
    /// old address left in place would still answer and be chosen as a source).
    Apply { remove: Option<(Ipv4Addr, u8)> },
}

pub fn change(installed: Option<&Lease>, new: &Lease) -> Change {
    let Some(old) = installed else {
        return Change::Apply { remove: None };
    };
    if (old.address, old.prefix_len) != (new.address, new.prefix_len) {
        Change::Apply {
            remove: Some((old.address, old.prefix_len)),
        }
    } else if old.router != new.router || old.dns != new.dns {
        Change::Apply { remove: None }
    } else {
        Change::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(address: [u8; 4], router: [u8; 4]) -> Lease {
        Lease {
            address: address.into(),
            prefix_len: 24,
            router: Some(router.into()),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            server: Ipv4Addr::new(10, 0, 2, 2),
            lease_time: 86400,
            renew_after: 43200,
        }
    }

    #[test]
    fn a_renewal_with_a_new_address_replaces_the_old_one() {
        let old = lease([10, 0, 2, 15], [10, 0, 2, 2]);
        let moved = lease([10, 0, 2, 16], [10, 0, 2, 2]);
        assert_eq!(
            change(Some(&old), &moved),
            Change::Apply {
                remove: Some((Ipv4Addr::new(10, 0, 2, 15), 24))
            }
        );
        let mut narrower = old.clone();
        narrower.prefix_len = 25;
        assert_eq!(
            change(Some(&old), &narrower),
            Change::Apply {
                remove: Some((Ipv4Addr::new(10, 0, 2, 15), 24))
            }
        );
        // The same lease again (times aside): nothing to do.
        let mut same = old.clone();
        same.renew_after = 100;
        assert_eq!(change(Some(&old), &same), Change::Keep);
        // A new router on the same address: configure, keep the address.
        let rerouted = lease([10, 0, 2, 15], [10, 0, 2, 1]);
        assert_eq!(
            change(Some(&old), &rerouted),
            Change::Apply { remove: None }
        );
        // Nothing in place (configuring failed before): configure again.
        assert_eq!(change(None, &old), Change::Apply { remove: None });
    }

    #[test]
    fn an_ack_becomes_a_lease() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let mut ack = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        ack.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        ack.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        ack.opts_mut()
            .insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        ack.opts_mut()
            .insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                10, 0, 2, 3,
            )]));
        ack.opts_mut().insert(DhcpOption::AddressLeaseTime(86400));
        ack.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        // through the wire format and back, as the client sees it
        let mut buf = Vec::new();
        ack.encode(&mut Encoder::new(&mut buf)).unwrap();
        let ack = Message::decode(&mut Decoder::new(&buf)).unwrap();
        let lease = lease_of(&ack).unwrap();
        assert_eq!(lease.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(lease.renew_after, 43200);
    }

    #[test]
    fn requests_carry_what_the_server_needs() {
        let client = Client {
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
            mac: [2, 0, 0, 0, 0, 1],
            xid: 99,
        };
        let req = client.request(
            Ipv4Addr::new(10, 0, 2, 15),
            Some(Ipv4Addr::new(10, 0, 2, 2)),
            None,
        );
        assert_eq!(req.opts().msg_type(), Some(MessageType::Request));
        assert!(matches!(
            req.opts().get(OptionCode::RequestedIpAddress),
            Some(DhcpOption::RequestedIpAddress(ip)) if *ip == Ipv4Addr::new(10, 0, 2, 15)
        ));
        assert!(req.flags().broadcast());
        let renew = client.request(
            Ipv4Addr::new(10, 0, 2, 15),
            None,
            Some(Ipv4Addr::new(10, 0, 2, 15)),
        );
        assert_eq!(renew.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert!(renew.opts().get(OptionCode::RequestedIpAddress).is_none());
    }
}
