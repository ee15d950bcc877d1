//! The shipped conflist is valid JSON, offers the versions we speak, and
//! its flannel-rs entry is accepted as libcni would hand it to us.

use cni_plugin::config;
use serde_json::Value;

#[test]
fn shipped_conflist_is_accepted() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conflist/10-flannel-rs.conflist"
    );
    let text = std::fs::read_to_string(path).expect("read conflist");
    let list: Value = serde_json::from_str(&text).expect("conflist is JSON");
    assert_eq!(list["cniVersion"], "1.0.0");
    assert_eq!(list["cniVersions"], serde_json::json!(["1.0.0", "1.1.0"]));
    let plugins = list["plugins"].as_array().expect("plugins");
    assert_eq!(plugins[0]["type"], "flannel-rs");
    assert_eq!(plugins[1]["type"], "portmap");
    assert_eq!(plugins[1]["capabilities"]["portMappings"], true);

    // libcni injects name and the chosen cniVersion into each plugin's object.
    for v in ["1.0.0", "1.1.0"] {
        let mut ours = plugins[0].clone();
        ours["name"] = list["name"].clone();
        ours["cniVersion"] = Value::String(v.into());
        let c = config::parse(ours.to_string().as_bytes()).expect("flannel-rs entry parses");
        assert_eq!(c.version.as_str(), v);
        assert!(c.hairpin_mode && c.is_default_gateway);
        assert_eq!(c.bridge, "cni0");
    }
}
