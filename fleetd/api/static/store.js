// The cluster as the dashboard holds it: filled from /fleet/v1/snapshot, kept current by events.
//
// It mirrors what fleetd's API view holds (units, placements, states, reasons, machines) and
// derives what the API shows, with the same rules: a unit's machine is the lowest id it is
// scheduled on; its current state is `launched` when that machine reports it not inactive,
// `loaded` when inactive, `inactive` without a placement or a state.

const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

export class Store {
  constructor() {
    this.reset();
  }

  reset() {
    this.units = new Map(); // name -> {name, desiredState, hash, global}
    this.placements = new Map(); // unit -> Map(machine -> {desiredState})
    this.states = new Map(); // unit -> Map(machine -> state)
    this.reasons = new Map(); // unit -> [reason]
    this.machines = new Map(); // id -> {id, primaryIP, metadata}
    this.events = []; // newest last, at most MAX_EVENTS
    this.revision = 0;
    this._sorted = null;
    this.version = 0; // bumped on every change: views re-render when it moved
  }

  load(snapshot) {
    this.reset();
    for (const unit of snapshot.units) {
      this.units.set(unit.name, {
        name: unit.name,
        desiredState: unit.desiredState,
        hash: unit.hash,
        global: Boolean(unit.global),
      });
      if (unit.reasons?.length) this.reasons.set(unit.name, unit.reasons);
    }
    for (const p of snapshot.placements) inner(this.placements, p.unit).set(p.machineID, p);
    for (const s of snapshot.states) inner(this.states, s.unit).set(s.machineID, s);
    this.setMachines(snapshot.machines);
    this._sorted = snapshot.units.map((unit) => unit.name); // the API lists them sorted
    this.revision = snapshot.revision;
    this.version++;
  }

  setMachines(machines) {
    this.machines = new Map(machines.map((m) => [m.id, m]));
    this.version++;
  }

  sortedNames() {
    if (this._sorted === null) this._sorted = [...this.units.keys()].sort(byName);
    return this._sorted;
  }

  /** Apply one event; returns true when the machine list should be read again. */
  apply(kind, data, id) {
    const unit = data.unit;
    let machinesChanged = false;
    switch (kind) {
      case "unit":
        if (data.action === "destroyed") {
          this.units.delete(unit);
          this._sorted = null;
        } else {
          if (!this.units.has(unit)) this._sorted = null;
          this.units.set(unit, {
            name: unit,
            desiredState: data.desiredState,
            hash: data.hash,
            global: Boolean(data.global),
          });
        }
        break;
      case "desired-state": {
        const known = this.units.get(unit);
        if (known) known.desiredState = data.desiredState;
        break;
      }
      case "placement":
        if (data.action === "unscheduled") drop(this.placements, unit, data.machineID);
        else inner(this.placements, unit).set(data.machineID, data);
        break;
      case "unplaceable":
        if (data.reasons?.length) this.reasons.set(unit, data.reasons);
        else this.reasons.delete(unit);
        break;
      case "unit-state":
        if (data.action === "removed") drop(this.states, unit, data.machineID);
        else inner(this.states, unit).set(data.machineID, data);
        break;
      case "machine":
        machinesChanged = true;
        break;
      default:
        break;
    }
    if (data.revision) this.revision = Math.max(this.revision, data.revision);
    this.events.push({ kind, data, id, at: new Date() });
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
    this.version++;
    return machinesChanged;
  }

  /** What a row shows for one unit. */
  view(name) {
    const unit = this.units.get(name);
    const placed = this.placements.get(name);
    const states = this.states.get(name);
    let machine = "";
    if (placed && placed.size) machine = [...placed.keys()].sort(byName)[0];
    const state = machine && states ? states.get(machine) : undefined;
    let current = "inactive";
    if (unit?.global) current = placed?.size ? "global" : "inactive";
    else if (placed?.get(machine) && state) current = state.activeState === "inactive" ? "loaded" : "launched";
    const reasons = this.reasons.get(name) || [];
    return {
      name,
      desiredState: unit?.desiredState ?? "",
      currentState: current,
      machine,
      machines: placed ? placed.size : 0,
      state: unit?.global && states ? summary(states) : state,
      reasons,
      health: health(unit, current, state, reasons),
    };
  }

  /** Units per machine (placed there) and how many of them run. */
  machineCounts() {
    const counts = new Map();
    for (const [unit, placed] of this.placements) {
      for (const machine of placed.keys()) {
        const entry = counts.get(machine) || { total: 0, running: 0, failed: 0 };
        entry.total++;
        const state = this.states.get(unit)?.get(machine);
        if (state?.activeState === "active") entry.running++;
        if (state?.activeState === "failed") entry.failed++;
        counts.set(machine, entry);
      }
    }
    return counts;
  }
}

export const MAX_EVENTS = 200;

/** One word for the row's colour: running, failed, pending, stopped, unplaceable, inactive. */
function health(unit, current, state, reasons) {
  if (reasons.length) return "unplaceable";
  if (state?.activeState === "failed" || state?.loadError) return "failed";
  if (state?.activeState === "active") return "running";
  if (state && /activating|deactivating|reloading/.test(state.activeState)) return "pending";
  if (unit && unit.desiredState === "launched" && current !== "launched" && current !== "global") return "pending";
  if (current === "loaded") return "stopped";
  return "inactive";
}

function summary(states) {
  const active = [...states.values()].filter((s) => s.activeState === "active").length;
  const first = states.values().next().value;
  // one pod address per machine: a global unit's summary shows none
  return { ...first, activeState: active ? "active" : first.activeState, subState: `${active} of ${states.size} running`, podAddress: undefined };
}

function inner(map, key) {
  let found = map.get(key);
  if (!found) map.set(key, (found = new Map()));
  return found;
}

function drop(map, key, innerKey) {
  const found = map.get(key);
  if (!found) return;
  found.delete(innerKey);
  if (!found.size) map.delete(key);
}
