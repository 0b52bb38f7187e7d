use vault_core::push::chunk::ChunkId;
use vault_core::push::ingest::{IngestEnv, IngestSession, Step};
use vault_core::push::limits::WindowAccount;
use vault_core::push::protocol::ClientFrame;

#[derive(Default)]
struct Env(WindowAccount);
impl IngestEnv for Env {
    fn sealed_len(&self, _: &ChunkId) -> Option<u32> { None }
    fn owned_len(&self, _: &ChunkId) -> Option<u32> { None }
    fn account<R>(&mut self, charge: impl FnOnce(&mut WindowAccount) -> R) -> R { charge(&mut self.0) }
}

#[test]
fn review_one_pusher_holds_all_sixteen_places_for_an_hour_cheaply() {
    let mut env = Env::default();
    let mut sessions: Vec<IngestSession> = (0..16).map(|_| IngestSession::start("hostile", 1 << 30, &mut env).unwrap()).collect();
    for s in &mut sessions {
        let f = ClientFrame::Begin { dataset: "x".into(), client_time: 0, audit_size: 0 };
        let w = f.encode().unwrap().len();
        s.on_frame(f, w, &mut env).unwrap();
    }
    for _ in 0..(3600 / 29) {
        for s in &mut sessions {
            let f = ClientFrame::Have { ids: vec![] };
            let w = f.encode().unwrap().len();
            assert!(matches!(s.on_frame(f, w, &mut env).unwrap(), Step::Reply(_)));
        }
    }
    println!("16 sessions kept alive for 1 h: {} bytes of quota, {} sessions counted", env.0.bytes, env.0.sessions);
}
