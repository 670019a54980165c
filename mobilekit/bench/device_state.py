"""Device state around a benchmark: CPUs, frequencies, governors, clusters, temperatures.

One snapshot is a dict (JSON-ready; every field present, None where unreadable):

    time          ISO time of the reading
    online        online CPU ids ([] when unknown)
    cpus          {"0": {"online", "cur_khz", "min_khz", "max_khz", "hw_max_khz", "governor",
                         "capacity"}, ...}
    clusters      [{"name": "little"|"mid"|"big"|"prime"|"all", "cpus": [...], "mask": "f",
                    "capacity", "max_khz"}] from cpu_capacity, else from the maximum frequency
    thermal       [{"zone", "type", "temp_c"}] (sysfs thermal zones)
    hottest_cpu_c the hottest CPU-like zone (type names a cpu/cluster/soc), else the hottest zone
    battery       {"temp_c", "level", "charging"} (`dumpsys battery`), None off Android
    thermal_status Android's thermal status 0-6 (`dumpsys thermalservice`), None if not given
    emulator      True on an emulator (ro.kernel.qemu / ro.boot.qemu, ro.hardware ranchu or
                  goldfish), False on a phone, None on a host
    cpu_model, loadavg, cpu_mask  host only: CPU model, 1/5/15 min load, effective CPU mask
    notes         what could not be read, and why that matters (never a failed run)

On a device everything comes from ONE `adb shell` call: STATE_SCRIPT (POSIX sh; also used
by android_bench/run_sweep.sh on the phone) prints `key=value` lines (`?` = unreadable)
followed by `### battery` and `### thermalservice` sections; `parse_state_text` reads it.
$MOBILEKIT_SYSFS replaces /sys (the tests' fake sysfs; unset on a real device).
"""
import datetime as _dt
import os
import re
import time

__all__ = ["STATE_SCRIPT", "parse_state_text", "adb_state", "host_state", "clusters_of",
           "emulator_from_props", "mask_of", "placements", "cpus_of_mask", "hottest_cpu_c", "EMULATOR_WARNING"]

EMULATOR_WARNING = ("emulator: its timings are the host CPU's through virtualisation, "
                    "not a phone's")
_CPU_FILES = (("cur_khz", "cpufreq/scaling_cur_freq"), ("min_khz", "cpufreq/scaling_min_freq"),
              ("max_khz", "cpufreq/scaling_max_freq"), ("hw_max_khz", "cpufreq/cpuinfo_max_freq"),
              ("governor", "cpufreq/scaling_governor"), ("capacity", "cpu_capacity"),
              ("online", "online"))
_CPU_ZONE = re.compile(r"cpu|cluster|little|big|mid|prime|soc|tsens|core|apc|silver|gold", re.I)

STATE_SCRIPT = r"""S=${MOBILEKIT_SYSFS:-/sys}
r() { if v=$(cat "$1" 2>/dev/null) && [ -n "$v" ]; then echo "$2=$v"; else echo "$2=?"; fi; }
r "$S/devices/system/cpu/online" online
for d in "$S"/devices/system/cpu/cpu[0-9]*; do
  [ -d "$d" ] || continue
  n=${d##*/cpu}
  r "$d/cpufreq/scaling_cur_freq" "cpu$n.cur_khz"
  r "$d/cpufreq/scaling_min_freq" "cpu$n.min_khz"
  r "$d/cpufreq/scaling_max_freq" "cpu$n.max_khz"
  r "$d/cpufreq/cpuinfo_max_freq" "cpu$n.hw_max_khz"
  r "$d/cpufreq/scaling_governor" "cpu$n.governor"
  r "$d/cpu_capacity" "cpu$n.capacity"
done
for z in "$S"/class/thermal/thermal_zone[0-9]*; do
  [ -d "$z" ] || continue
  n=${z##*thermal_zone}
  r "$z/type" "zone$n.type"
  r "$z/temp" "zone$n.temp"
done
for p in ro.kernel.qemu ro.boot.qemu ro.hardware; do
  echo "prop.$p=$(getprop "$p" 2>/dev/null)"
done
echo '### battery'
dumpsys battery 2>&1 | head -n 40
echo '### thermalservice'
dumpsys thermalservice 2>&1 | head -n 60
echo '### end'
"""


def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _int(text):
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def parse_cpu_list(text):
    """'0-3,6' -> [0, 1, 2, 3, 6] (sysfs CPU list); None when unreadable."""
    if text is None:
        return None
    cpus = []
    for part in str(text).strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        if _int(low) is None or (high and _int(high) is None):
            return None
        cpus += range(int(low), int(high or low) + 1)
    return cpus


def mask_of(cpus):
    """[4, 5, 6, 7] -> 'f0' (taskset's hex)."""
    return format(sum(1 << c for c in cpus), "x") if cpus else None


def cpus_of_mask(mask):
    value = int(str(mask), 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def _empty_state():
    return {"time": _now(), "online": [], "cpus": {}, "clusters": [], "thermal": [],
            "hottest_cpu_c": None, "battery": None, "thermal_status": None, "emulator": None,
            "cpu_model": None, "loadavg": None, "cpu_mask": None, "notes": []}


# ---------------------------------------------------------------- parsing the script output


def parse_state_text(text, props=None):
    """STATE_SCRIPT output (+ getprop dict for emulator detection, else the dump's own
    `prop.*` lines) -> a snapshot dict."""
    state = _empty_state()
    sections = re.split(r"^### (battery|thermalservice|end)\s*$", text or "", flags=re.M)
    values = dict(re.findall(r"^([\w.]+)=(.*)$", sections[0], re.M))
    named = dict(zip(sections[1::2], sections[2::2]))
    _fill_cpus(state, values)
    _fill_thermal(state, values)
    state["battery"] = _battery(named.get("battery"), state["notes"])
    state["thermal_status"] = _thermal_status(named.get("thermalservice"), state["notes"])
    if props is None and any(k.startswith("prop.") for k in values):   # run_sweep.sh's dump
        props = {k[5:]: v.strip() for k, v in values.items() if k.startswith("prop.")}
    if props is not None:
        state["emulator"] = emulator_from_props(props)
        if state["emulator"]:
            state["notes"].append(EMULATOR_WARNING)
    return _finish(state)


def _known(value):
    return None if value in (None, "?", "") else value


def _fill_cpus(state, values):
    ids = sorted({int(m) for m in re.findall(r"^cpu(\d+)\.", "\n".join(values), re.M)})
    online = parse_cpu_list(_known(values.get("online")))
    if online is None:
        state["notes"].append("online CPU list unreadable: all CPUs assumed online")
        online = ids
    state["online"] = online
    for cpu in ids:
        entry = {}
        for key, _ in _CPU_FILES:
            raw = _known(values.get(f"cpu{cpu}.{key}"))
            entry[key] = raw.strip() if key == "governor" and raw else _int(raw)
        entry["online"] = cpu in online
        state["cpus"][str(cpu)] = entry


def _fill_thermal(state, values):
    zones = sorted({int(m) for m in re.findall(r"^zone(\d+)\.", "\n".join(values), re.M)})
    for zone in zones:
        milli = _int(_known(values.get(f"zone{zone}.temp")))
        # sysfs gives millidegrees; a few old kernels give degrees
        temp = None if milli is None else (milli / 1000.0 if abs(milli) > 1000 else float(milli))
        state["thermal"].append({"zone": zone, "type": _known(values.get(f"zone{zone}.type")),
                                 "temp_c": temp})


def _battery(text, notes):
    if text is None:
        return None
    fields = dict((k.strip().lower(), v.strip()) for k, v in
                  re.findall(r"^\s*([A-Za-z][\w ]*):\s*(.*)$", text, re.M))
    if "level" not in fields and "temperature" not in fields:
        notes.append(f"dumpsys battery unreadable: {_first_line(text)}")
        return None
    temp = _int(fields.get("temperature"))
    powered = any(fields.get(k) == "true" for k in ("ac powered", "usb powered",
                                                     "wireless powered", "dock powered"))
    status = _int(fields.get("status"))
    return {"temp_c": None if temp is None else temp / 10.0, "level": _int(fields.get("level")),
            "charging": powered or status == 2}


def _thermal_status(text, notes):
    if text is None:
        return None
    match = re.search(r"^\s*Thermal Status:\s*(\d+)", text, re.M)
    if not match:
        notes.append(f"dumpsys thermalservice gave no thermal status: {_first_line(text)}")
        return None
    return int(match.group(1))


def _first_line(text):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[0][:200] if lines else "(no output)"


def _finish(state):
    cpus = state["cpus"]
    missing = [c for c, e in cpus.items() if e["online"] and e["cur_khz"] is None]
    if cpus and missing:
        state["notes"].append(f"cpufreq unreadable for cpu {','.join(missing)}: "
                              "frequency and governor are null")
    if not cpus:
        state["notes"].append("no CPU entries under /sys/devices/system/cpu")
    if not state["thermal"]:
        state["notes"].append("no readable thermal zones")
    state["clusters"] = clusters_of(cpus)
    state["hottest_cpu_c"] = hottest_cpu_c(state)
    return state


def hottest_cpu_c(state):
    temps = [z for z in state.get("thermal") or [] if z.get("temp_c") is not None]
    cpu_like = [z["temp_c"] for z in temps if z.get("type") and _CPU_ZONE.search(z["type"])]
    values = cpu_like or [z["temp_c"] for z in temps]
    return max(values) if values else None


_NAMES = {1: ("all",), 2: ("little", "big"), 3: ("little", "big", "prime"),
          4: ("little", "mid", "big", "prime")}


def clusters_of(cpus):
    """CPU clusters by cpu_capacity (else by maximum frequency), slowest first, named."""
    def rank(entry):
        if entry.get("capacity") is not None:
            return ("capacity", entry["capacity"])
        top = entry.get("hw_max_khz") or entry.get("max_khz")
        return ("max_khz", top) if top is not None else None

    ranks = {int(c): rank(e) for c, e in cpus.items()}
    if not ranks or any(r is None for r in ranks.values()):
        return []
    if len({kind for kind, _ in ranks.values()}) > 1:   # mixed sources: not comparable
        ranks = {c: ("max_khz", cpus[str(c)].get("hw_max_khz") or cpus[str(c)].get("max_khz"))
                 for c in ranks}
        if any(v is None for _, v in ranks.values()):
            return []
    levels = sorted({value for _, value in ranks.values()})
    names = _NAMES.get(len(levels)) or tuple(f"cluster{i}" for i in range(len(levels)))
    out = []
    for name, level in zip(names, levels):
        members = sorted(c for c, (_, v) in ranks.items() if v == level)
        entry = cpus[str(members[0])]
        out.append({"name": name, "cpus": members, "mask": mask_of(members),
                    "capacity": entry.get("capacity"),
                    "max_khz": entry.get("hw_max_khz") or entry.get("max_khz")})
    return out


def placements(state, threads):
    """[(name, hex mask, thread counts)] for `--cpu-mask auto`: each cluster the device
    reports (little / big / prime ...), then all online cores; thread counts above a
    placement's core count are dropped (its core count is used when none fits)."""
    clusters = [c for c in state.get("clusters") or [] if c["name"] != "all"]
    online = state.get("online") or sorted(int(c) for c in state.get("cpus") or {})
    out = [(c["name"], c["mask"], c["cpus"]) for c in clusters]
    if online:
        out.append(("all", mask_of(online), online))
    if not out:   # nothing readable: one unpinned placement (the row's notes say why)
        return [("all", None, list(threads))]
    return [(name, mask, [t for t in threads if t <= len(cpus)] or [len(cpus)])
            for name, mask, cpus in out]


def emulator_from_props(props):
    """True for the Android emulator (qemu kernel, ranchu/goldfish hardware)."""
    props = props or {}
    if props.get("ro.kernel.qemu") == "1" or props.get("ro.boot.qemu") == "1":
        return True
    return (props.get("ro.hardware") or props.get("ro.boot.hardware") or "") in ("ranchu", "goldfish")


# ---------------------------------------------------------------- readers


def adb_state(adb, timeout=30.0):
    """One snapshot of an Android device through an `Adb` session (never raises for the
    device's sake: a failed read is a snapshot with a note)."""
    try:
        _, out = adb.run(["shell", STATE_SCRIPT], timeout=timeout, check=False)
        props = adb.props()
    except Exception as exc:   # adb trouble: the benchmark row reports it, the state is unknown
        state = _empty_state()
        state["notes"].append(f"device state unreadable: {exc}")
        return state
    return parse_state_text(out, props)


def host_state(sysfs="/sys", proc="/proc"):
    """One snapshot of this Linux host, read directly (same shape as adb_state's)."""
    lines = []

    def read(path, key):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                value = f.read().strip()
        except OSError:
            value = ""
        lines.append(f"{key}={value or '?'}")

    cpu_root = os.path.join(sysfs, "devices", "system", "cpu")
    read(os.path.join(cpu_root, "online"), "online")
    for name in sorted(os.listdir(cpu_root)) if os.path.isdir(cpu_root) else []:
        if re.fullmatch(r"cpu\d+", name):
            for key, rel in _CPU_FILES[:-1]:
                read(os.path.join(cpu_root, name, rel), f"{name}.{key}")
    thermal = os.path.join(sysfs, "class", "thermal")
    for name in sorted(os.listdir(thermal)) if os.path.isdir(thermal) else []:
        match = re.fullmatch(r"thermal_zone(\d+)", name)
        if match:
            read(os.path.join(thermal, name, "type"), f"zone{match.group(1)}.type")
            read(os.path.join(thermal, name, "temp"), f"zone{match.group(1)}.temp")
    state = parse_state_text("\n".join(lines))
    state["cpu_model"] = _cpu_model(proc)
    try:
        state["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        state["notes"].append("load average unreadable")
    try:
        state["cpu_mask"] = mask_of(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        state["notes"].append("effective CPU mask unknown (no sched_getaffinity)")
    return state


def _cpu_model(proc):
    try:
        with open(os.path.join(proc, "cpuinfo"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def wait_for(predicate, timeout, interval=1.0, clock=time.monotonic, sleep=time.sleep):
    """Poll predicate() until true or timeout seconds passed; (ok, seconds waited)."""
    start = clock()
    while True:
        if predicate():
            return True, clock() - start
        if clock() - start >= timeout:
            return False, clock() - start
        sleep(interval)
