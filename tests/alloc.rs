//! The metrics on the per-message path allocate nothing after warm-up: a
//! counting global allocator around every operation a shard performs per
//! message (counters, histograms, reply-type labels, the top-K topic
//! table, including evictions). Its own test binary, so the allocator
//! counts only this process; the count is per thread, so the test
//! harness's other threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use wshandler::metrics::topk::TopK;
use wshandler::metrics::{
    CallKindLabel, CloseLabel, InLabel, OutLabel, Outcome, ShardMetrics, StoreMetrics,
};
use wshandler::protocol::kind::MsgType;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only
// counts allocations on the calling thread (a const-initialised
// thread-local Cell, which itself never allocates).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` above with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as for `alloc`/`dealloc`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn the_per_message_metrics_allocate_nothing() {
    let m = ShardMetrics::default();
    let s = StoreMetrics::default();
    let replies: Vec<&[u8]> = vec![
        br#"{"type":"data_response","success":true}"#,
        br#"{"type":"publish","topic":"a.b","data":1}"#,
        br#"{"type":"error","code":"invalid_json"}"#,
        b"not json",
    ];
    // Topics as the publish path has them (`Publish::topic`, made before
    // counting): many more than the table holds, so evictions happen.
    let topics: Vec<Arc<str>> = (0..1000).map(|i| format!("site.{i}").into()).collect();
    let hot: Arc<str> = "site.hot".into();
    let mut t = TopK::new(20);
    let round = |t: &mut TopK| {
        for i in 0..10_000u64 {
            m.received[InLabel::Type(MsgType::Data).index()].inc();
            m.received[InLabel::Invalid.index()].inc();
            for r in &replies {
                m.sent[OutLabel::of_json(r) as usize].inc();
            }
            m.payload_in.add(100);
            m.wire_out.add(120);
            m.errors[wshandler::protocol::ErrorCode::InvalidJson as usize].inc();
            m.ingested.inc();
            m.deliveries.add(3);
            m.fanout.observe(i % 300);
            m.closes[CloseLabel::of(Some(1000)) as usize].inc();
            m.call_done(CallKindLabel::Rpc, Outcome::Ok, i * 7);
            s.batch_size.observe(i % 64);
            s.commit_latency.observe(i * 13);
            t.count(&hot, 1, 2);
            t.count(&topics[(i % 1000) as usize], 1, 0);
        }
    };
    // Warm-up: the table fills (its map and slots were sized at creation).
    round(&mut t);
    let n = allocations(|| round(&mut t));
    assert_eq!(n, 0, "{n} allocations in 10,000 messages' worth of metrics");
    // The counting is real: the allocator does see an allocation.
    let n = allocations(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert_eq!(n, 1);
    assert_eq!(m.ingested.get(), 20_000);
}
