//! Brokers on their own network: one network namespace per broker, each
//! joined to a bridge in the test's namespace by a veth pair, on a /24 of
//! its own. The test (the clients) reaches every broker through the
//! bridge; [`Net::cut`] drops the traffic between two brokers (blackhole
//! routes on both sides) while the test still reaches both, as a network
//! partition between brokers does. Needs root (`ip netns`, veth, bridge);
//! everything is removed on drop.

use std::process::Command;

pub struct Net {
    /// The first three octets of the subnet.
    subnet: String,
    names: Vec<String>,
    bridge: String,
    cuts: Vec<(usize, usize)>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this process may make network namespaces: it runs as root,
/// with iproute2.
pub fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Net {
    /// `n` namespaces, nodes 1..=n.
    pub fn new(n: usize) -> Net {
        let tag = format!("{:05}", std::process::id() % 100_000);
        // 198.18.0.0/15 is set aside for tests of network devices.
        let subnet = format!("198.18.{}", std::process::id() % 250);
        let bridge = format!("sbr{tag}");
        let mut net = Net {
            subnet,
            names: Vec::new(),
            bridge: bridge.clone(),
            cuts: Vec::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", net.subnet),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 1..=n {
            let ns = format!("strata-it-{tag}-{i}");
            let (host, inner) = (format!("sh{tag}{i}"), format!("sn{tag}{i}"));
            ip(&["netns", "add", &ns]);
            net.names.push(ns.clone());
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&[
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                &inner,
            ]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            ip(&["link", "set", &host, "master", &bridge]);
            ip(&["link", "set", &host, "up"]);
        }
        net
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.names[i - 1]
    }

    /// Drops every packet between nodes `a` and `b`.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.blackholes("add", a, b);
        self.cuts.push((a, b));
    }

    /// Lets every cut pair talk again.
    pub fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.cuts) {
            self.blackholes("del", a, b);
        }
    }

    /// Adds or deletes (`op`) the blackhole routes of `a` to `b` and back.
    fn blackholes(&self, op: &str, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let dest = format!("{}/32", self.ip(to));
            ip(&[
                "netns",
                "exec",
                self.ns(from),
                "ip",
                "route",
                op,
                "blackhole",
                &dest,
            ]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
