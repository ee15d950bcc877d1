//! The kit's own kernel behaviour, as root (fails loudly otherwise): a
//! namespace guard deletes its namespace also when the test panics, and
//! `in_netns` runs code inside a namespace while the caller stays where it
//! was, also when that code panics.

use std::path::Path;
use std::time::Duration;

use testkit::{in_netns, Netns};

/// The inode of the network namespace `/proc/thread-self/ns/net` or a
/// bind-mounted namespace file names: equal inodes, same namespace.
fn ns_inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

fn this_thread_ns() -> u64 {
    ns_inode(Path::new("/proc/thread-self/ns/net"))
}

#[test]
fn guard_deletes_the_namespace_on_drop_and_on_panic() {
    testkit::assert_root("testkit guard test");
    let ns = Netns::new("kit-drop");
    let path = ns.path();
    assert!(path.exists(), "{} not created", path.display());
    assert!(ns.name().starts_with("fct-kit-drop-"), "{}", ns.name());
    assert!(ns
        .run("ip", &["link", "show", "lo"])
        .unwrap()
        .contains("UP"));
    drop(ns);
    assert!(!path.exists(), "{} left after drop", path.display());

    // A test that panics while holding the guard, with a process inside.
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let ns = Netns::new("kit-panic");
        let sleeper = ns
            .exec("sleep")
            .arg("60")
            .spawn()
            .expect("sleep in the namespace");
        tx.send((ns.path(), sleeper)).unwrap();
        panic!("a failing assertion");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let (path, mut sleeper) = rx.recv().unwrap();
    assert!(!path.exists(), "{} left after a panic", path.display());
    // The guard SIGKILLed the process inside before deleting.
    use std::os::unix::process::ExitStatusExt;
    let status = sleeper.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "SIGKILL expected: {status:?}");
}

#[test]
fn explicit_delete_leaves_nothing_for_drop() {
    testkit::assert_root("testkit guard test");
    let mut ns = Netns::new("kit-del");
    let path = ns.path();
    ns.delete();
    assert!(!path.exists());
    ns.delete(); // idempotent, and so is the drop that follows
}

#[test]
fn in_netns_runs_inside_and_the_caller_stays_put() {
    testkit::assert_root("testkit in_netns test");
    let ns = Netns::new("kit-in");
    ns.run(
        "ip",
        &[
            "link",
            "add",
            "kitdummy0",
            "type",
            "veth",
            "peer",
            "name",
            "kitdummy1",
        ],
    )
    .unwrap();
    let before = this_thread_ns();
    let target = ns_inode(&ns.path());
    assert_ne!(before, target);

    let (inside, sees_dummy) = in_netns(&ns, || {
        // /proc/thread-self/net follows the thread's network namespace.
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
        (this_thread_ns(), dev.contains("kitdummy0"))
    })
    .unwrap();
    assert_eq!(inside, target, "closure did not run in the namespace");
    assert!(sees_dummy, "the namespace's link is not visible inside");
    assert_eq!(this_thread_ns(), before, "caller moved");

    // A panic inside comes back to the caller, which is still at home.
    let panicked = std::panic::catch_unwind(|| {
        in_netns(&ns, || panic!("boom inside")).unwrap();
    });
    let msg = panicked.unwrap_err();
    assert_eq!(msg.downcast_ref::<&str>(), Some(&"boom inside"));
    assert_eq!(this_thread_ns(), before, "caller moved after a panic");

    // The same by path, as for namespaces the test did not create.
    let inside = in_netns(testkit::netns::path_of(ns.name()), this_thread_ns).unwrap();
    assert_eq!(inside, target);
}

#[test]
fn command_in_starts_the_program_inside() {
    testkit::assert_root("testkit command_in test");
    let ns = Netns::new("kit-cmd");
    let out = testkit::cmd::run(
        ns.spawn_in(Path::new("/bin/readlink"))
            .unwrap()
            .arg("/proc/self/ns/net"),
    )
    .unwrap();
    assert_eq!(out.trim(), format!("net:[{}]", ns_inode(&ns.path())));
}

#[test]
fn http_get_reaches_a_server_inside_only() {
    testkit::assert_root("testkit http test");
    let ns = Netns::new("kit-http");
    // A one-shot server on a thread that lives in the namespace.
    let path = ns.path();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        testkit::netns::enter_on_this_thread(&path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        use std::io::{Read, Write};
        // Read the whole request first: closing with unread input would
        // reset the connection.
        let mut req = Vec::new();
        let mut buf = [0u8; 512];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert_ne!(n, 0, "request ended early");
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready")
            .unwrap();
    });
    let port = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // Nothing listens on that port in the test's own namespace.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(
        testkit::http::get(&ns, port, "/readyz").unwrap(),
        (200, "ready".to_string())
    );
    server.join().unwrap();
}

#[test]
fn linked_pair_pings_across() {
    testkit::assert_root("testkit linked_pair test");
    let (a, b) =
        testkit::netns::linked_pair("kit-pair", "veth0", ["198.51.100.1/24", "198.51.100.2/24"])
            .unwrap();
    a.run("ping", &["-c", "1", "-W", "5", "198.51.100.2"])
        .unwrap();
    assert!(b.has_link("veth0") && a.has_link("veth0"));
}
