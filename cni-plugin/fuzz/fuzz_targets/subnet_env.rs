//! subnet.env text: parse never panics, and whatever parses renders back
//! to text that parses to the same value.
#![no_main]

use lease_store::subnet_env::SubnetEnv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = SubnetEnv::parse(text) {
        let again = SubnetEnv::parse(&env.render()).expect("rendered subnet.env must parse");
        assert_eq!(again, env);
        if let Some(s) = env.subnet {
            let _ = cni_plugin::ipam::Pool::new(s);
        }
    }
});
