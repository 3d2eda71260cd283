//! The drain driver: while a drain job runs, takes its units from the store
//! (`Store::drain_poll`) and moves each value's bytes from its source to its target: in
//! memory for this process's segments, through the data plane (the TE initiator) for other
//! nodes' memory; then reports with `Store::drain_finish`, which commits the move. The job
//! logic (what to move, where, how many at once, when it is done) is the core's.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mc_core::store::{DrainPlace, DrainUnit, Store};
use mc_core::transfer::{DataPlane, Transfer, TransferOp, TransferOutcome};
use mc_core::Master;

/// How long one copy (read and write) may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(30);

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Starts the driver thread.
pub fn start(master: Arc<Master>) -> std::io::Result<()> {
    std::thread::Builder::new().name("drain".into()).spawn(move || run(&master)).map(|_| ())
}

fn run(master: &Master) {
    let store = master.store().clone();
    let plane = master.data_plane().cloned();
    loop {
        if master.is_shutting_down() {
            return;
        }
        if !store.drain_running() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        for unit in store.drain_poll(Instant::now(), wall_ms()) {
            copy(&store, plane.as_ref(), unit);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Moves one unit's bytes; `drain_finish` is called once, from whichever thread ends it.
fn copy(store: &Arc<Store>, plane: Option<&Arc<dyn DataPlane>>, unit: DrainUnit) {
    let finish = {
        let store = store.clone();
        let id = unit.id;
        move |r: Result<(), String>| store.drain_finish(id, r, wall_ms())
    };
    let no_plane = |p: &DrainPlace| format!("{}: no data plane to reach it (--te-port off)", p.endpoint);
    let deadline = Instant::now() + COPY_TIMEOUT;
    let write = {
        let store = store.clone();
        let plane = plane.cloned();
        let (id, to) = (unit.id, unit.to.clone());
        move |data: Vec<u8>, finish: Box<dyn FnOnce(Result<(), String>) + Send>| {
            if to.local {
                let ok = store.drain_write_local(id, &data);
                return finish(if ok { Ok(()) } else { Err("the target segment went away".into()) });
            }
            let Some(plane) = plane else { return finish(Err(no_plane(&to))) };
            let t = Transfer {
                id,
                endpoint: to.endpoint.clone(),
                op: TransferOp::Write { addr: to.address, data: data.into() },
                deadline,
            };
            plane.submit(
                t,
                Box::new(move |o| {
                    finish(match o {
                        TransferOutcome::Written => Ok(()),
                        TransferOutcome::Failed(why) => Err(why),
                        other => Err(format!("unexpected outcome {other:?}")),
                    })
                }),
            );
        }
    };
    let finish: Box<dyn FnOnce(Result<(), String>) + Send> = Box::new(finish);
    if unit.from.local {
        match store.drain_read_local(unit.id) {
            Some(data) => write(data, finish),
            None => finish(Err("the source segment went away".into())),
        }
        return;
    }
    let Some(plane) = plane else { return finish(Err(no_plane(&unit.from))) };
    let t = Transfer {
        id: unit.id,
        endpoint: unit.from.endpoint.clone(),
        op: TransferOp::Read { addr: unit.from.address, len: unit.len },
        deadline,
    };
    plane.submit(
        t,
        Box::new(move |o| match o {
            TransferOutcome::Read(data) if data.len() as u64 == unit.len => write(data, finish),
            TransferOutcome::Read(data) => finish(Err(format!("read {} of {} bytes", data.len(), unit.len))),
            TransferOutcome::Failed(why) => finish(Err(why)),
            other => finish(Err(format!("unexpected outcome {other:?}"))),
        }),
    );
}
