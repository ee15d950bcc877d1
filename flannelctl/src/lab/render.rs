//! The human-readable lab summary: nodes, subnets, pods, and how to get in.

use std::fmt::Write;

use super::state::LabState;

pub fn table(st: &LabState) -> String {
    let mut s = String::new();
    let store = match (&st.etcd_endpoint, &st.store_path, &st.kube) {
        (Some(e), _, _) => format!("etcd at {e} (in {})", st.infra_ns),
        (None, Some(p), _) => format!("embedded, {}", p.display()),
        (None, None, Some(_)) => "Kubernetes (node podCIDRs)".into(),
        (None, None, None) => "none".into(),
    };
    let _ = writeln!(
        s,
        "lab {} ({}): backend {}, network {}, store {}, underlay 198.51.100.0/24 mtu {}",
        st.name, st.phase, st.backend, st.network, store, st.underlay_mtu
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<6} {:<24} {:<14} {:<16} {:<5} {:<8}",
        "NODE", "NAMESPACE", "PUBLIC IP", "SUBNET", "MTU", "DAEMON"
    );
    for n in &st.nodes {
        let daemon = match &n.daemon {
            Some(p) if n.daemon_alive => format!("pid {}", p.pid),
            Some(_) => "stopped".into(),
            None if st.kube.is_some() => "pod".into(),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<6} {:<24} {:<14} {:<16} {:<5} {:<8}",
            n.index,
            n.netns,
            n.public_ip,
            n.subnet.as_deref().unwrap_or("-"),
            n.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            daemon
        );
    }
    if !st.pods.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<6} {:<24} {:<16}", "NODE", "POD NAMESPACE", "IP");
        for p in &st.pods {
            let _ = writeln!(
                s,
                "{:<6} {:<24} {:<16}",
                p.node,
                p.netns,
                p.ip.as_deref().unwrap_or("-")
            );
        }
        let first = &st.pods[0];
        if let Some(other) = st.pods.iter().rev().find(|p| p.node != first.node) {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "try:  ip netns exec {} ping -c 3 {}",
                first.netns,
                other.ip.as_deref().unwrap_or("<ip>")
            );
        }
    }
    if let Some(n) = st.nodes.first() {
        let _ = writeln!(s, "      ip netns exec {} ip route", n.netns);
        if let Some(p) = &n.daemon {
            let _ = writeln!(s, "      less {}", p.log.display());
        }
    }
    if st.kube.is_some() {
        let _ = writeln!(
            s,
            "kubectl: flannelctl lab kubectl --name {} -- get pods -A -o wide",
            st.name
        );
        if let (Some(kc), Some(k)) = (&st.kubeconfig, &st.kube) {
            let _ = writeln!(
                s,
                "      (or ip netns exec {} {} --kubeconfig {} ...)",
                st.infra_ns,
                k.bin_dir.join("kubectl").display(),
                kc.display()
            );
        }
        let _ = writeln!(
            s,
            "      the daemons are the pods of DaemonSet kube-flannel-rs/flannel-rs"
        );
    }
    let _ = writeln!(s, "down: flannelctl lab down --name {}", st.name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::{NodeState, PodState};

    #[test]
    fn table_lists_nodes_pods_and_a_ping_across_nodes() {
        let mk_node = |k: u32, subnet: &str| NodeState {
            index: k,
            netns: format!("fct-lab-t-node{k}"),
            public_ip: format!("198.51.100.{k}"),
            dir: "/d".into(),
            subnet_file: "/d/subnet.env".into(),
            healthz_port: 8471,
            daemon: None,
            subnet: Some(subnet.into()),
            mtu: Some(1450),
            daemon_alive: false,
        };
        let mk_pod = |k: u32, ip: &str| PodState {
            node: k,
            index: 1,
            netns: format!("fct-lab-t-n{k}p1"),
            container_id: String::new(),
            ip: Some(ip.into()),
        };
        let st = LabState {
            name: "t".into(),
            backend: "vxlan".into(),
            store: "embedded".into(),
            network: "10.244.0.0/16".into(),
            subnet_len: 24,
            underlay_mtu: 1500,
            state_dir: "/d".into(),
            bin_dir: "/b".into(),
            infra_ns: "fct-lab-t-infra".into(),
            etcd: None,
            etcd_endpoint: None,
            etcd_prefix: None,
            store_path: Some("/d/store.json".into()),
            net_config_path: "/d/net-conf.json".into(),
            nodes: vec![mk_node(1, "10.244.5.1/24"), mk_node(2, "10.244.9.1/24")],
            pods: vec![mk_pod(1, "10.244.5.2"), mk_pod(2, "10.244.9.2")],
            phase: "ready".into(),
            kubeconfig: None,
            kubectl_netns: None,
            test_image: None,
            kube: None,
        };
        let t = table(&st);
        assert!(t.contains("10.244.9.1/24"), "{t}");
        assert!(
            t.contains("ip netns exec fct-lab-t-n1p1 ping -c 3 10.244.9.2"),
            "{t}"
        );
        assert!(t.contains("flannelctl lab down --name t"), "{t}");
    }
}
