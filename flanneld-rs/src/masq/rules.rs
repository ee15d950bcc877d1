//! The nftables ruleset, built as data (no I/O): one `ip` table of our own
//! with two base chains.
//!
//! postrouting (nat, srcnat priority), per cluster network, in flannel's order:
//! 1. return if the packet carries kube-proxy's mark 0x4000 (kube-proxy
//!    masquerades those itself);
//! 2. return for pod subnet -> cluster (pod to pod: no NAT);
//! 3. return for cluster -> pod subnet;
//! 4. return for non-cluster -> pod subnet (e.g. NodePort traffic keeps its
//!    client address);
//! 5. masquerade fully-random cluster -> non-cluster, except multicast
//!    224.0.0.0/4 (pods reaching the outside world);
//! 6. masquerade fully-random non-cluster -> cluster (e.g. the node itself
//!    reaching pods elsewhere, so replies come back through the overlay).
//!
//! forward (filter): accept anything from or to the cluster network. This
//! ends only our chain: a drop in another base chain on the forward hook
//! (iptables' filter FORWARD with policy DROP) still applies, which is why
//! `forward.rs` puts accepts into that chain too.
//!
//! The batch first creates and deletes our table, then builds it again: nft
//! applies a batch as one transaction, so the old rules are replaced
//! atomically and no packet ever sees a half-built table.

use std::borrow::Cow;
use std::collections::HashSet;

use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{
    BinaryOperation, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix,
};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NATFlag, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// Our table's name (in family `ip`).
pub const TABLE: &str = "flannel-rs";
pub const POSTROUTING: &str = "postrouting";
pub const FORWARD: &str = "forward";
/// kube-proxy's masquerade mark.
pub const KUBE_PROXY_MARK: u32 = 0x4000;

/// The batch that (re)installs our table for `pod_subnet` in `cluster`.
pub fn ruleset(table: &str, cluster: &[Ipv4Net], pod_subnet: Ipv4Net) -> Nftables<'static> {
    let table: Cow<'static, str> = Cow::Owned(table.to_string());
    let mut b = Batch::new();
    b.add(NfListObject::Table(our_table(&table)));
    b.delete(NfListObject::Table(our_table(&table)));
    b.add(NfListObject::Table(our_table(&table)));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: table.clone(),
        name: POSTROUTING.into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(100),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: table.clone(),
        name: FORWARD.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Forward),
        prio: Some(0),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    let rule = |chain: &'static str, expr: Vec<Statement<'static>>| {
        NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: table.clone(),
            chain: chain.into(),
            expr: Cow::Owned(expr),
            ..Rule::default()
        })
    };
    for net in cluster {
        let pod = prefix(pod_subnet);
        let cl = prefix(*net);
        b.add(rule(POSTROUTING, vec![mark_match(), ret()]));
        b.add(rule(
            POSTROUTING,
            vec![
                ip("saddr", Operator::EQ, pod.clone()),
                ip("daddr", Operator::EQ, cl.clone()),
                ret(),
            ],
        ));
        b.add(rule(
            POSTROUTING,
            vec![
                ip("saddr", Operator::EQ, cl.clone()),
                ip("daddr", Operator::EQ, pod.clone()),
                ret(),
            ],
        ));
        b.add(rule(
            POSTROUTING,
            vec![
                ip("saddr", Operator::NEQ, cl.clone()),
                ip("daddr", Operator::EQ, pod.clone()),
                ret(),
            ],
        ));
        b.add(rule(
            POSTROUTING,
            vec![
                ip("saddr", Operator::EQ, cl.clone()),
                ip("daddr", Operator::NEQ, cl.clone()),
                ip("daddr", Operator::NEQ, prefix(multicast())),
                masquerade(),
            ],
        ));
        b.add(rule(
            POSTROUTING,
            vec![
                ip("saddr", Operator::NEQ, cl.clone()),
                ip("daddr", Operator::EQ, cl.clone()),
                masquerade(),
            ],
        ));
        b.add(rule(
            FORWARD,
            vec![ip("saddr", Operator::EQ, cl.clone()), accept()],
        ));
        b.add(rule(FORWARD, vec![ip("daddr", Operator::EQ, cl), accept()]));
    }
    b.to_nftables()
}

/// The batch that deletes our table and nothing else; creating it first
/// makes the delete succeed when it is already gone.
pub fn removal(table: &str) -> Nftables<'static> {
    let table: Cow<'static, str> = Cow::Owned(table.to_string());
    let mut b = Batch::new();
    b.add(NfListObject::Table(our_table(&table)));
    b.delete(NfListObject::Table(our_table(&table)));
    b.to_nftables()
}

fn our_table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::IP,
        name: Cow::Owned(name.to_string()),
        handle: None,
    }
}

fn multicast() -> Ipv4Net {
    Ipv4Net::new(std::net::Ipv4Addr::new(224, 0, 0, 0), 4).unwrap_or_default()
}

fn prefix(net: Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(Cow::Owned(net.network().to_string()))),
        len: u32::from(net.prefix_len()),
    }))
}

fn ip(field: &'static str, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: "ip".into(),
                field: field.into(),
            },
        ))),
        right,
        op,
    })
}

fn mark_match() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::BinaryOperation(Box::new(BinaryOperation::AND(
            Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark })),
            Expression::Number(KUBE_PROXY_MARK),
        ))),
        right: Expression::Number(KUBE_PROXY_MARK),
        op: Operator::EQ,
    })
}

fn ret() -> Statement<'static> {
    Statement::Return(None)
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn masquerade() -> Statement<'static> {
    Statement::Masquerade(Some(NAT {
        addr: None,
        family: None,
        port: None,
        flags: Some(HashSet::from([NATFlag::FullyRandom])),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The rules of one chain as compact text, e.g. `saddr==10.244.1.0/24 ...`.
    fn chain_rules(set: &Nftables, chain: &str) -> Vec<String> {
        super::super::nft::planned_rules(set)
            .into_iter()
            .filter(|(c, _)| c == chain)
            .map(|(_, r)| r)
            .collect()
    }

    #[test]
    fn postrouting_follows_flannel_order() {
        let set = ruleset(
            TABLE,
            &["10.244.0.0/16".parse().unwrap()],
            "10.244.1.0/24".parse().unwrap(),
        );
        assert_eq!(
            chain_rules(&set, POSTROUTING),
            vec![
                "mark&16384==16384 return",
                "saddr==10.244.1.0/24 daddr==10.244.0.0/16 return",
                "saddr==10.244.0.0/16 daddr==10.244.1.0/24 return",
                "saddr!=10.244.0.0/16 daddr==10.244.1.0/24 return",
                "saddr==10.244.0.0/16 daddr!=10.244.0.0/16 daddr!=224.0.0.0/4 masquerade(fully-random)",
                "saddr!=10.244.0.0/16 daddr==10.244.0.0/16 masquerade(fully-random)",
            ]
        );
        assert_eq!(
            chain_rules(&set, FORWARD),
            vec!["saddr==10.244.0.0/16 accept", "daddr==10.244.0.0/16 accept"]
        );
    }

    #[test]
    fn batch_replaces_only_our_table() {
        let v = serde_json::to_value(ruleset(
            "t1",
            &["10.244.0.0/16".parse().unwrap()],
            "10.244.1.0/24".parse().unwrap(),
        ))
        .unwrap();
        let cmds = v["nftables"].as_array().unwrap();
        let first: Vec<Value> = cmds.iter().take(3).cloned().collect();
        assert!(first[0]["add"]["table"]["name"] == "t1");
        assert!(first[1]["delete"]["table"]["name"] == "t1");
        assert!(first[2]["add"]["table"]["name"] == "t1");
        for c in cmds {
            let obj = c.as_object().unwrap().values().next().unwrap();
            let inner = obj.as_object().unwrap().values().next().unwrap();
            let t = inner.get("table").unwrap_or(&inner["name"]);
            assert_eq!(t, "t1", "{c}");
        }
        let rm = serde_json::to_value(removal("t1")).unwrap();
        assert_eq!(rm["nftables"].as_array().unwrap().len(), 2);
    }
}
