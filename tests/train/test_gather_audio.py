"""The pretraining-audio gatherer: deny-list, conversion, unreadable files, licenses, balance, resume (no network)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hear_embed.train import gather_audio
from hear_embed.train.gather_audio import (
    PACKAGE_SOURCES, PackageSource, balance, check_allowed, convert_files, denied_package, denied_sample, gather,
    package_files, package_license,
)
from tests.builders.paths import FIXTURES

AUDIO = FIXTURES / "audio"


@pytest.mark.parametrize("package", ["hydrogen-drumkits", "hydrogen-drumkits-effects", "hydrogen-data",
                                     "avldrums.lv2-soundfont", "drumgizmo", "drumkv1", "drumkv1-lv2"])
def test_drum_kit_packages_are_refused(package, tmp_path):
    assert denied_package(package)
    with pytest.raises(ValueError, match="reserved for evaluation"):
        check_allowed(package)
    with pytest.raises(ValueError, match="reserved for evaluation"):
        gather(tmp_path, sources=(PackageSource(package, (("*", "sounds"),)),), flite=False, synthetic_count=0)
    assert not (tmp_path / "debs").exists()  # refused before any download


def test_no_listed_source_is_denied():
    assert not [source.package for source in PACKAGE_SOURCES if denied_package(source.package)]


@pytest.mark.parametrize("name, denied", [
    ("drum_heavy_kick.flac", True), ("bd_haus.flac", True), ("sn_dolf.flac", True), ("loop_amen.flac", True),
    ("tabla_ke1.flac", True), ("perc_bell.flac", True), ("elec_snare.flac", True), ("elec_beep.flac", True),
    ("glitch_perc3.flac", True), ("hat_snap.flac", True),
    ("ambi_choir.flac", False), ("guit_harmonics.flac", False), ("bass_voxy_c.flac", False), ("misc_crow.flac", False),
])
def test_sonic_pi_drum_samples_are_left_out(name, denied, tmp_path):
    assert denied_sample(name) == denied
    samples = tmp_path / "usr/share/sonic-pi/samples"
    samples.mkdir(parents=True)
    sf.write(samples / name, np.zeros(1600, dtype=np.float32), 16000)
    chosen = package_files(tmp_path, PackageSource("sonic-pi-samples", (("*/sonic-pi/samples/*", "sounds"),)))
    assert (chosen == []) == denied


def test_unreadable_files_are_skipped_counted_and_named(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    (folder / "empty.ogg").write_bytes(b"")
    long_tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(22 * 8000) / 8000).astype(np.float32)
    sf.write(folder / "long.wav", long_tone, 8000)  # 22 s at 8 kHz -> 10 s + 10 s + 2 s clips at 16 kHz
    files = [(folder / "corrupt.wav", "sounds"), (folder / "empty.ogg", "sounds"), (folder / "long.wav", "music"),
             (AUDIO / "0_george_2.wav", "speech")]
    skipped: list[str] = []
    rows = convert_files(files, tmp_path / "out", "test-source", "MIT", 10.0, skipped)
    assert len(skipped) == 2 and "corrupt.wav" in skipped[0] and "empty.ogg" in skipped[1]
    durations = {row["path"]: float(row["duration_s"]) for row in rows}
    assert [durations[f"clips/music/test-source/long_{i:03d}.flac"] for i in range(3)] == [10.0, 10.0, 2.0]
    george = sf.info(str(tmp_path / "out/clips/speech/test-source/0_george_2_000.flac"))
    assert (george.samplerate, george.channels) == (16000, 1)
    assert george.frames / 16000 == pytest.approx(sf.info(str(AUDIO / "0_george_2.wav")).duration, abs=1e-3)
    assert {row["license"] for row in rows} == {"MIT"}


def test_silent_and_too_short_pieces_are_dropped():
    audio = np.concatenate([0.5 * np.ones(16000), np.zeros(16000), 0.5 * np.ones(4000)]).astype(np.float32)
    pieces = gather_audio.split_clips(audio, clip_seconds=1.0, min_seconds=0.5)
    assert len(pieces) == 1  # the silent second and the 0.25 s tail are dropped


@pytest.mark.parametrize("text, expected", [
    ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+\n\n"
     "Files: debian/*\nLicense: GPL-2+\n\nFiles: music/*\nLicense: CC-BY-SA-3.0\n", "GPL-2+; CC-BY-SA-3.0"),
    ("This package was debianized by someone.\nThe data is in the public domain.\n", "mentions public domain"),
    ("Packaged by someone.\n\nLicense:\n   This program is free software; it is under the terms of the GNU General\n"
     "   Public License, and parts of the GNU Lesser General Public License.\n", "mentions LGPL; GPL"),
    ("License: This program is free software; you can redistribute it and/or modify it.\n", "see copyright file"),
])
def test_license_from_copyright_file(tmp_path, text, expected):
    doc = tmp_path / "usr/share/doc/pkg"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(text)
    assert package_license(tmp_path, "pkg") == expected
    assert package_license(tmp_path, "other").startswith("unknown")


def rows_of(category: str, source: str, seconds: list[float]) -> list[dict]:
    return [{"path": f"{category}/{source}/{i}.flac", "source": source, "category": category, "duration_s": str(s)}
            for i, s in enumerate(seconds)]


def test_balance_gives_each_category_the_smallest_total_and_alternates_sources():
    rows = (rows_of("speech", "a", [10.0] * 30) + rows_of("speech", "b", [10.0] * 30)
            + rows_of("music", "c", [10.0] * 5) + rows_of("sounds", "d", [5.0] * 100))
    selected = balance(rows)
    hours = {category: sum(float(r["duration_s"]) for r in rows if r["category"] == category and r["path"] in selected)
             for category in ("speech", "music", "sounds")}
    assert hours == {"speech": 50.0, "music": 50.0, "sounds": 50.0}
    speech_sources = [r["source"] for r in rows if r["path"] in selected and r["category"] == "speech"]
    assert abs(speech_sources.count("a") - speech_sources.count("b")) <= 1
    assert len(balance(rows, hours_per_category=1 / 360)) == 1 + 1 + 2  # 10 s budget per category


def test_gather_writes_manifest_summary_and_resumes(tmp_path, monkeypatch):
    fsdd = tmp_path / "fsdd"
    fsdd.mkdir()
    for name in ("0_george_2.wav", "3_jackson_0.wav"):  # takes 2 and 0: reserved for evaluation, left out
        (fsdd / name).write_bytes((AUDIO / name).read_bytes())
    (fsdd / "5_nicolas_13.wav").write_bytes((AUDIO / "5_nicolas_3.wav").read_bytes())
    (fsdd / "7_theo_49.wav").write_bytes(b"not audio")
    out = tmp_path / "out"
    summary = gather(out, sources=(), fsdd=fsdd, flite=False, synthetic_count=3, synthetic_seed=1)
    with open(out / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert sorted(row["source"] for row in manifest) == ["fsdd", "synthetic", "synthetic", "synthetic"]
    assert manifest[0]["path"] == "clips/speech/fsdd/5_nicolas_13_000.flac"
    assert summary["skipped"] == 1 and "7_theo_49.wav" in (out / "skipped.txt").read_text()
    listed = (out / "train_files.txt").read_text().split()
    assert listed and all((out / path).is_file() for path in listed)
    assert "| **speech** | all | 1 |" in (out / "summary.md").read_text()

    monkeypatch.setattr(gather_audio, "gather_fsdd", lambda *args: pytest.fail("a finished source was redone"))
    again = gather(out, sources=(), fsdd=fsdd, flite=False, synthetic_count=3, synthetic_seed=1)
    assert again == summary


def build_deb(folder: Path, package: str, files: dict[str, bytes]) -> Path:
    """A minimal Debian package holding ``files`` (paths inside it) and a DEP-5 copyright file."""
    import subprocess

    root = folder / package
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
                                         "Maintainer: test <t@example.org>\nDescription: test package\n")
    doc = root / "usr/share/doc" / package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                                   "Files: *\nLicense: CC0-1.0\n")
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    deb = folder / "debs" / f"{package}_1.0_all.deb"
    deb.parent.mkdir(exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(__import__("shutil").which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_a_package_is_unpacked_converted_and_its_bad_file_named(tmp_path):
    """A local .deb (so apt-get is not called): categories by rule, license from copyright, a corrupt file named
    by its path inside the package, not by the temporary folder it was unpacked into."""
    deb = build_deb(tmp_path, "test-sounds", {
        "usr/share/test/music/george.wav": (AUDIO / "0_george_2.wav").read_bytes(),
        "usr/share/test/effects/broken.ogg": b"OggS" + b"\0" * 60,
        "usr/share/test/readme.txt": b"not audio, ignored"})
    source = PackageSource("test-sounds", (("*/music/*", "music"), ("*/effects/*", "sounds")))
    skipped: list[str] = []
    rows = gather_audio.gather_package(source, tmp_path / "out", deb.parent, 10.0, skipped)
    assert [(row["category"], row["license"]) for row in rows] == [("music", "CC0-1.0")]
    assert rows[0]["path"] == "clips/music/test-sounds/usr__share__test__music__george_000.flac"
    assert len(skipped) == 1 and "test-sounds_1.0_all.deb:usr/share/test/effects/broken.ogg" in skipped[0]
    assert "gather_" not in skipped[0]
