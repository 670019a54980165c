"""Issue 17: device state in every row, repeats, unstable flags, cooldown, --cpu-mask auto.

The stand-in adb of test_benchmark_model_adb runs the real state script (POSIX sh) over a
fake sysfs written here in the shapes phones print: three clusters with cpu_capacity
160/512/1024, cpufreq files, thermal zones that heat up with each benchmark run, a
frequency drop mid-run, `dumpsys battery` / `dumpsys thermalservice` texts; plus an
emulator profile and a locked-down one.
"""
import hashlib
import json

import pytest
from click.testing import CliRunner

from mobilekit.bench import device_state as ds
from mobilekit.bench.benchmark_model import Adb, run_adb
from mobilekit.bench.sweep import run_sweep, summary_table
from mobilekit.bench.trust import Trials
from test_benchmark_model_adb import PIXEL, PIXEL_PROPS, FakeDevice, make_elf

BATTERY = """Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 2847000
  status: 2
  health: 2
  present: true
  level: 85
  scale: 100
  voltage: 4221
  temperature: 305
  technology: Li-ion
"""


def thermalservice(status):
    return f"""IsStatusOverride: false
ThermalEventListeners:
\tcallbacks: 1
\tkilled: false
\tbroadcasts count: -1
ThermalStatusListeners:
\tcallbacks: 1
\tkilled: false
\tbroadcasts count: -1
Thermal Status: {status}
Cached temperatures:
\tTemperature{{mValue=34.5, mType=3, mName=skin, mStatus=0}}
HAL Ready: true
HAL connection:
\tThermalHAL 2.0 connected: yes
"""


# cpu -> (cpu_capacity, cpuinfo_max_freq kHz): 4 little, 3 big, 1 prime (a Pixel-like 4+3+1)
PHONE_CPUS = {0: (160, 1803000), 1: (160, 1803000), 2: (160, 1803000), 3: (160, 1803000),
              4: (512, 2348000), 5: (512, 2348000), 6: (512, 2348000), 7: (1024, 2850000)}
PHONE_ZONES = [("cpu-0-0-usr", 38000), ("cpu-1-0-usr", 40000), ("cpu-1-2-usr", 41000),
               ("battery", 30500), ("skin-therm", 33000)]


def write_sysfs(root, cpus, zones, governor="performance", cpufreq=True, online="0-7"):
    cpu_dir = root / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True)
    if online is not None:
        (cpu_dir / "online").write_text(online + "\n")
    for cpu, (capacity, max_khz) in cpus.items():
        d = cpu_dir / f"cpu{cpu}"
        (d / "cpufreq").mkdir(parents=True)
        if capacity is not None:
            (d / "cpu_capacity").write_text(f"{capacity}\n")
        if cpufreq:
            for name, value in (("scaling_cur_freq", max_khz), ("scaling_min_freq", 300000),
                                ("scaling_max_freq", max_khz), ("cpuinfo_max_freq", max_khz),
                                ("scaling_governor", governor)):
                (d / "cpufreq" / name).write_text(f"{value}\n")
    for i, (kind, temp) in enumerate(zones):
        z = root / "class" / "thermal" / f"thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        if temp is not None:
            (z / "temp").write_text(f"{temp}\n")
    return root


@pytest.fixture
def phone(tmp_path, monkeypatch):
    device = FakeDevice(tmp_path, monkeypatch)
    sysfs = write_sysfs(tmp_path / "sysfs", PHONE_CPUS, PHONE_ZONES)
    device.set(sysfs=str(sysfs), dumpsys={"battery": BATTERY,
                                          "thermalservice": thermalservice(0)})
    device.sysfs = sysfs
    return device


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "mnv2.tflite"
    path.write_bytes(b"TFL3" + bytes(range(256)) * 4)
    return path


@pytest.fixture
def binary(tmp_path):
    return make_elf(tmp_path / "android_aarch64_benchmark_model")


def sweep(model, binary, tmp_path, **kwargs):
    kwargs.setdefault("threads", [4])
    return run_sweep([model], "adb", ["xnnpack"], kwargs.pop("threads"), benchmark_binary=binary,
                     out_dir=tmp_path / "out", num_runs=50, **kwargs)


# ---------------------------------------------------------------- state in every row


def test_rows_carry_device_state_before_and_after(phone, model, binary, tmp_path):
    (row,) = sweep(model, binary, tmp_path)
    assert row["ok"] is True, row["error"]
    before, after = row["state_before"], row["state_after"]
    assert before["online"] == list(range(8))
    assert [(c["name"], c["cpus"], c["mask"], c["capacity"]) for c in before["clusters"]] == [
        ("little", [0, 1, 2, 3], "f", 160), ("big", [4, 5, 6], "70", 512),
        ("prime", [7], "80", 1024)]
    assert before["cpus"]["7"] == {"cur_khz": 2850000, "min_khz": 300000, "max_khz": 2850000,
                                   "hw_max_khz": 2850000, "governor": "performance",
                                   "capacity": 1024, "online": True}
    assert [(z["type"], z["temp_c"]) for z in before["thermal"]][:3] == [
        ("cpu-0-0-usr", 38.0), ("cpu-1-0-usr", 40.0), ("cpu-1-2-usr", 41.0)]
    assert before["hottest_cpu_c"] == 41.0   # CPU zones only: not battery or skin
    assert before["battery"] == {"temp_c": 30.5, "level": 85, "charging": True}
    assert before["thermal_status"] == 0 and before["emulator"] is False
    assert after["time"] >= before["time"]
    # how it ran: flags, binary identity, printed values
    assert row["binary_sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    assert "--num_threads=4" in row["run_flags"] and row["run_flags"][0].startswith("--graph=")
    assert (row["warmup_count"], row["model_size_mb"]) == (31, 3.43119)
    assert (row["repeats"], row["repeat_medians_us"], row["unstable"]) == (1, [15611], False)
    assert row["cv"] == round(287 / 15702.3, 5) and row["unstable_reasons"] is None
    # the same row in the jsonl file
    saved = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert saved["state_after"]["clusters"] == after["clusters"]


def test_dynamic_governor_is_flagged_and_only_that(phone, model, binary, tmp_path):
    for cpu in range(8):
        (phone.sysfs / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor").write_text("schedutil\n")
    (row,) = sweep(model, binary, tmp_path)
    assert row["unstable"] is True
    assert row["unstable_reasons"] == ["governor schedutil on cpu 0,1,2,3,4,5,6,7 (not a "
                                       "fixed-frequency governor: performance, powersave, userspace)"]


def test_heating_and_frequency_drop_mid_run(phone, model, binary, tmp_path):
    # each run heats every zone 3 °C; during run 2 the prime core is capped at 1.8 GHz
    phone.set(heat_mC_per_run=3000, bench_effects=[
        [2, "devices/system/cpu/cpu7/cpufreq/scaling_cur_freq", "1800000"],
        [2, "devices/system/cpu/cpu7/cpufreq/scaling_max_freq", "1800000"],
        [3, "dumpsys:thermalservice", thermalservice(2)]])
    (row,) = sweep(model, binary, tmp_path, repeat=3)
    assert row["repeats"] == 3 and len(row["repeat_medians_us"]) == 3
    reasons = row["unstable_reasons"]
    assert row["unstable"] is True and len(reasons) == 4, reasons
    assert reasons[0] == "CPU frequency changed during timing on cpu 7 (cpu7: 1800-2850 MHz)"
    assert reasons[1].startswith("CPU maximum frequency (a thermal cap) changed during timing on cpu 7")
    assert reasons[2] == "hottest CPU zone rose 9.0 °C (41.0 -> 50.0 °C) > 5 °C"
    assert reasons[3] == "Android thermal status 2 (moderate) during timing"
    assert row["state_after"]["cpus"]["7"]["max_khz"] == 1800000
    # the same drop on cpu7 does not concern a run pinned to the little cores
    state_file = phone.state / f"{PIXEL[0]}.json"   # the stand-in keeps one file per serial
    state = json.loads(state_file.read_text())
    state.pop("dumpsys")   # the phone is back to thermal status 0
    state_file.write_text(json.dumps(state))
    phone.set(heat_mC_per_run=0, bench_effects=[
        [5, "devices/system/cpu/cpu7/cpufreq/scaling_cur_freq", "1200000"]])
    (row,) = sweep(model, binary, tmp_path, repeat=2, cpu_mask="f")
    assert row["cpu_mask"] == "f" and row["unstable"] is False, row["unstable_reasons"]


def test_cv_across_repeats_flags_and_interval(phone, model, binary, tmp_path):
    phone.set(medians=[15000, 15100, 14950, 15050, 15020])
    (steady,) = sweep(model, binary, tmp_path, repeat=5)
    assert steady["repeat_medians_us"] == [15000, 15100, 14950, 15050, 15020]
    assert steady["inference_median_us"] == 15020
    assert 14950 <= steady["median_ci_low_us"] <= 15020 <= steady["median_ci_high_us"] <= 15100
    assert steady["unstable"] is False and steady["cv"] < 0.01
    phone.set(medians=[15000, 19000, 14000, 17500, 15500])
    (noisy,) = sweep(model, binary, tmp_path, repeat=5)
    assert noisy["unstable"] is True and noisy["cv"] > 0.05
    assert noisy["unstable_reasons"] == [f"CV {noisy['cv'] * 100:.1f} % across repeats > 5 %"]
    headers, cells, notes = summary_table([steady, noisy])
    table = [dict(zip(headers, c)) for c in cells]
    assert table[0]["stable"] == "stable" and table[1]["stable"].startswith("UNSTABLE: CV")
    assert table[0]["95% CI ms"] is not None and table[0]["CPU °C"] == "41->41"
    assert table[1]["speed-up"].endswith("no difference measurable")


# ---------------------------------------------------------------- profiles


def test_emulator_profile(tmp_path, monkeypatch, model, binary):
    device = FakeDevice(tmp_path, monkeypatch)
    sysfs = write_sysfs(tmp_path / "sysfs", {c: (None, None) for c in range(4)}, [],
                        cpufreq=False, online="0-3")
    props = dict(PIXEL_PROPS, **{"ro.kernel.qemu": "1", "ro.hardware": "ranchu",
                                 "ro.product.model": "sdk_gphone64_arm64"})
    device.set(sysfs=str(sysfs), props=props, dumpsys={"battery": BATTERY})
    rows = sweep(model, binary, tmp_path, cpu_mask="auto", threads=[8])
    # no cpu_capacity and no cpufreq: no clusters, so auto runs all cores only, and with
    # 4 cores 8 threads do not fit: the core count is used
    assert [(r["cluster"], r["cpu_mask"], r["threads"]) for r in rows] == [("all", "f", 4)]
    row = rows[0]
    assert row["ok"] is True and row["emulator"] is True
    assert ds.EMULATOR_WARNING in row["notes"]
    assert row["state_before"]["clusters"] == [] and row["state_before"]["thermal"] == []
    headers, cells, notes = summary_table(rows)
    assert dict(zip(headers, cells[0]))["stable"].startswith("EMULATOR")
    assert any("not a phone's" in n for n in notes)


def test_locked_down_device_gives_nulls_with_notes(tmp_path, monkeypatch, model, binary):
    device = FakeDevice(tmp_path, monkeypatch)
    sysfs = write_sysfs(tmp_path / "sysfs", PHONE_CPUS, [("cpu-0-0-usr", None)], cpufreq=False,
                        online=None)
    device.set(sysfs=str(sysfs), dumpsys={
        "battery": "Permission Denial: can't dump Battery service from pid=1, uid=2000\n"})
    (row,) = sweep(model, binary, tmp_path)
    assert row["ok"] is True, row["error"]
    state = row["state_before"]
    assert state["cpus"]["0"]["cur_khz"] is None and state["cpus"]["0"]["governor"] is None
    assert state["cpus"]["0"]["capacity"] == 160   # what is readable is still read
    assert state["battery"] is None and state["thermal_status"] is None
    assert state["thermal"] == [{"zone": 0, "type": "cpu-0-0-usr", "temp_c": None}]
    notes = "\n".join(row["notes"])
    for text in ("online CPU list unreadable", "cpufreq unreadable for cpu 0,1,2,3,4,5,6,7",
                 "dumpsys battery unreadable: Permission Denial",
                 "dumpsys thermalservice gave no thermal status: Can't find service"):
        assert text in notes
    assert row["unstable"] is False   # nothing fired; the notes say what was not judged


def test_cpu_mask_auto_runs_each_cluster_with_threads_that_fit(phone, model, binary, tmp_path):
    rows = sweep(model, binary, tmp_path, cpu_mask="auto", threads=[1, 4])
    assert [(r["cluster"], r["cpu_mask"], r["threads"]) for r in rows] == [
        ("little", "f", 1), ("little", "f", 4), ("big", "70", 1), ("prime", "80", 1),
        ("all", "ff", 1), ("all", "ff", 4)]
    tasksets = [c["tokens"][1] for c in phone.runs() if c["tokens"][0] == "taskset"]
    assert tasksets == ["f", "f", "70", "80", "ff", "ff"]
    headers, cells, _ = summary_table(rows)
    assert [dict(zip(headers, c))["cpu"] for c in cells] == ["little", "little", "big", "prime",
                                                             "all", "all"]


# ---------------------------------------------------------------- cooldown


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def trials_on(phone, model, binary, tmp_path, **kwargs):
    session = Adb()
    clock = FakeClock()
    run_once = lambda m, d, t: run_adb(m, binary, d, t, adb=session, progress=False,   # noqa: E731
                                       log_dir=tmp_path / "logs")
    trials = Trials(run_once, lambda: ds.adb_state(session), clock=clock, sleep=clock.sleep,
                    poll_interval=5.0, **kwargs)
    return trials, clock


def test_cooldown_seconds_and_temperature_wait(phone, model, binary, tmp_path):
    # a run heats the zones 6 °C; each reading while waiting cools them 2 °C
    phone.set(heat_mC_per_run=6000, cool_mC_per_read=2000)
    trials, clock = trials_on(phone, model, binary, tmp_path, repeat=2, cooldown=3.0,
                              cooldown_temp=42.0, cooldown_timeout=60.0)
    row = trials(model, "xnnpack", 4)
    assert row["ok"] is True and row["repeats"] == 2
    # no wait before the first run; before the second: 3 s, then polls until below 42 °C
    assert clock.sleeps[0] == 3.0 and set(clock.sleeps[1:]) <= {5.0} and len(clock.sleeps) >= 2
    assert not any("cooldown" in r for r in row["unstable_reasons"] or [])
    reads = json.loads((phone.state / f"{PIXEL[0]}.json").read_text())["state_reads"]
    assert reads >= 5   # before/after each run + the polls


def test_cooldown_temperature_times_out_cleanly(phone, model, binary, tmp_path):
    phone.set(heat_mC_per_run=8000, cool_mC_per_read=0)
    trials, clock = trials_on(phone, model, binary, tmp_path, repeat=2, cooldown_temp=40.0,
                              cooldown_timeout=20.0)
    row = trials(model, "xnnpack", 4)
    assert row["ok"] is True and row["repeats"] == 2   # the run still happens
    assert clock.now == 20.0
    assert "cooldown to 40 °C timed out after 20.0 s (hottest CPU zone 49.0 °C)" in \
        row["unstable_reasons"]


# ---------------------------------------------------------------- host rows and bad input


def test_host_state_from_a_sysfs_tree(tmp_path):
    sysfs = write_sysfs(tmp_path / "sys", {0: (None, 3000000), 1: (None, 3000000)},
                        [("x86_pkg_temp", 52000)], governor="powersave", online="0-1")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n")
    state = ds.host_state(str(sysfs), str(proc))
    assert state["cpu_model"] == "AMD EPYC 7B13" and len(state["loadavg"]) == 3
    assert state["cpus"]["1"]["governor"] == "powersave" and state["hottest_cpu_c"] == 52.0
    assert [c["name"] for c in state["clusters"]] == ["all"]   # one level of max frequency
    assert state["cpu_mask"]   # this process's effective mask


@pytest.mark.parametrize("args,message", [
    (["--repeat", "0"], "Invalid value for '--repeat'"),
    (["--cooldown", "-1"], "Invalid value for '--cooldown'"),
    (["--cooldown-temp", "-5"], "Invalid value for '--cooldown-temp'"),
    (["--target", "adb", "--cpu-mask", "bigcores"], "--cpu-mask must be 'auto'"),
    (["--cpu-mask", "auto"], "--cpu-mask needs --target adb"),
])
def test_bad_trust_options_exit_2(tmp_path, args, message):
    from mobilekit.cli import cli

    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    result = CliRunner().invoke(cli, ["bench", str(model), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_bench_compare_on_a_device_alternates_a_and_b(phone, binary, tmp_path, monkeypatch):
    from mobilekit.cli import cli

    a, b = tmp_path / "fp32.tflite", tmp_path / "int8.tflite"
    a.write_bytes(b"TFL3 float model")
    b.write_bytes(b"TFL3 int8 model")
    # the n-th benchmark run reports the n-th median: A, B, A, B, ... (B ~20 % faster)
    phone.set(medians=[10_000, 8_000, 10_100, 8_050, 9_950, 7_990, 10_020, 8_010])
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["bench-compare", str(a), str(b), "--target", "adb",
                                      "--benchmark-binary", str(binary), "--repeat", "4",
                                      "--log-dir", str(tmp_path / "ab_logs"), "--json"])
    assert result.exit_code == 0, result.output
    (out,) = json.loads(result.output[result.output.index("["):])
    assert (out["n_a"], out["n_b"], out["verdict"]) == (4, 4, "faster")
    assert out["median_a_us"] == 10_010 and out["median_b_us"] == 8_005
    assert 1.2 < out["ci_low"] <= out["speedup"] <= out["ci_high"] < 1.3
    graphs = [next(t for t in c["tokens"] if t.startswith("--graph="))
              for c in phone.runs() if c["tokens"][0].endswith("benchmark_model")]
    assert [g.rsplit("/", 1)[1] for g in graphs] == ["fp32.tflite", "int8.tflite"] * 4
    assert len(list((tmp_path / "ab_logs").glob("*.log"))) == 8


# ---------------------------------------------------------------- sustained mode


def test_sustained_windows_show_throttling(phone, model, binary, tmp_path):
    from mobilekit.bench.sustained import Sustained

    # 3 minutes of 10 s windows = 18 runs; the phone heats 1 °C a run, and from run 7 on the
    # prime core is capped and latency rises 20 %
    phone.set(heat_mC_per_run=1000, medians=[10_000] * 6 + [12_000] * 12,
              bench_effects=[[7, "devices/system/cpu/cpu7/cpufreq/scaling_cur_freq", "1800000"]])
    session, clock = Adb(), FakeClock()

    def window(m, d, t):
        clock.now += 10.0
        return run_adb(m, binary, d, t, adb=session, progress=False, log_dir=tmp_path / "logs",
                       num_runs=1, warmup_runs=0, min_secs=10)

    row = Sustained(window, lambda: ds.adb_state(session), minutes=3, window=10,
                    clock=clock)(model, "xnnpack", 4)
    summary = row["sustained"]
    assert len(summary["windows"]) == 18 and [w["t_s"] for w in summary["windows"][:3]] == [0, 10, 20]
    assert summary["first_minute_median_us"] == 10_000 and summary["steady_median_us"] == 12_000
    assert summary["slowdown"] == 1.2 and row["inference_median_us"] == 12_000
    temps = [w["hottest_cpu_c"] for w in summary["windows"]]
    assert temps[0] == 41.0 and temps[-1] == 58.0 and temps == sorted(temps)
    assert [w["cur_khz"]["7"] for w in summary["windows"]][5:8] == [2850000, 2850000, 1800000]
    reasons = "\n".join(row["unstable_reasons"])
    assert "CPU frequency changed" in reasons and "hottest CPU zone rose 18.0 °C" in reasons
    assert "--min_secs=10" in row["run_flags"] and "--num_runs=1" in row["run_flags"]


def test_sustained_host_sweep_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from mobilekit.cli import cli

    from mobilekit.keras import keras, layers, tf

    inp = keras.Input((8, 8, 3), batch_size=1)   # a real one-op model from the converter
    data = tf.lite.TFLiteConverter.from_keras_model(
        keras.Model(inp, layers.Conv2D(2, 3)(inp))).convert()
    model = tmp_path / "tiny.tflite"
    model.write_bytes(data)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["bench", str(model), "--sustained", "0.02", "--window",
                                      "0.3", "--out", str(out), "--plots", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    summary = rows[0]["sustained"]
    assert 3 <= len(summary["windows"]) <= 6 and summary["first_minute_median_us"] > 0
    assert all(w["count"] >= 1 for w in summary["windows"])
    assert (out / f"sustained_{model.stem}_xnnpack_t1.png").stat().st_size > 1000
    bad = CliRunner().invoke(cli, ["bench", str(model), "--sustained", "1", "--repeat", "2",
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "drop --repeat" in bad.output


# ---------------------------------------------------------------- with resume and several phones


def test_resume_keys_on_trial_settings_and_cluster(phone, model, binary, tmp_path):
    from mobilekit.bench.resume import config_key
    from mobilekit.report.writers import read_jsonl

    rows = sweep(model, binary, tmp_path, cpu_mask="auto", threads=[1], repeat=2, wait_device=0)
    assert [(r["cluster"], r["repeats"]) for r in rows] == [
        ("little", 2), ("big", 2), ("prime", 2), ("all", 2)]
    assert "repeat=2" in rows[0]["flags"] and "cpu_mask=auto" in rows[0]["flags"]
    assert len({config_key(r) for r in rows}) == 4   # the cluster tells auto rows apart
    runs = len(phone.runs())
    assert runs == 8
    # the same settings again: every configuration (cluster included) was measured
    again = sweep(model, binary, tmp_path, cpu_mask="auto", threads=[1], repeat=2,
                  wait_device=0, resume=True)
    assert len(phone.runs()) == runs and [r["cluster"] for r in again] == [
        "little", "big", "prime", "all"]
    # another repeat count makes other rows: all four measured again, the old ones kept
    more = sweep(model, binary, tmp_path, cpu_mask="auto", threads=[1], repeat=3,
                 wait_device=0, resume=True)
    assert len(phone.runs()) == runs + 12 and len(more) == 8
    assert sorted(r["repeats"] for r in more) == [2] * 4 + [3] * 4
    assert len(read_jsonl(tmp_path / "out" / "results.jsonl")) == 8


def test_each_phone_of_a_fleet_has_its_own_state_and_clusters(phone, model, binary, tmp_path):
    other = ("SERIAL_B", "device", "usb:1-2 model:Galaxy_S23 transport_id:2")
    four = {c: (1024, 2000000) if c < 2 else (400, 1500000) for c in range(4)}
    sysfs_b = write_sysfs(tmp_path / "sysfs_b", four, [("cpu-0-usr", 50000)], online="0-3")
    phone.set(devices=[phone.config["devices"][0], other],
              sysfs_by_serial={other[0]: str(sysfs_b)})
    rows = sweep(model, binary, tmp_path, cpu_mask="auto", threads=[2], repeat=2,
                 serial="all", wait_device=0)
    by_serial = {}
    for row in rows:
        assert row["ok"] is True and row["repeats"] == 2, row["error"]
        by_serial.setdefault(row["serial"], []).append((row["cluster"], row["cpu_mask"]))
    assert by_serial == {PIXEL[0]: [("little", "f"), ("big", "70"), ("prime", "80"), ("all", "ff")],
                         other[0]: [("little", "c"), ("big", "3"), ("all", "f")]}
    hottest = {r["serial"]: r["state_before"]["hottest_cpu_c"] for r in rows}
    assert hottest == {PIXEL[0]: 41.0, other[0]: 50.0}
