"""The settings dialog: this machine's node settings, saved per user."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from peerfarm.programs import PROGRAMS, find_program
from ui.settings import Settings, SettingsError

if TYPE_CHECKING:
    from ui.app import PeerfarmApp

# Settings the running node cannot change on the fly: they apply after a restart.
RESTART_FIELDS = (
    "name",
    "listen",
    "bootstraps",
    "data_dir",
    "lan_discovery",
    "farm_key_file",
    "advertise",
    "tags",
    *PROGRAMS,
)


def parse_bootstraps(text: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[\s,;]+", text.strip()) if part)


def path_row(edit: QLineEdit, parent: QWidget, folder: bool, title: str) -> QHBoxLayout:
    button = QPushButton("Choose…")

    def choose() -> None:
        if folder:
            path = QFileDialog.getExistingDirectory(parent, title, edit.text())
        else:
            path, _ = QFileDialog.getOpenFileName(parent, title, edit.text())
        if path:
            edit.setText(path)

    button.clicked.connect(choose)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


class SettingsDialog(QDialog):
    def __init__(self, app: PeerfarmApp, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.app = app
        self.setWindowTitle("Settings")
        self.setMinimumWidth(600)
        s = app.store.effective
        self.name = QLineEdit(s.name)
        self.name.setPlaceholderText("the host name")
        self.listen = QLineEdit(s.listen)
        self.listen.setToolTip(
            "0.0.0.0:7100: reachable from the network; 127.0.0.1: this computer only"
        )
        self.bootstraps = QLineEdit(" ".join(s.bootstraps))
        self.bootstraps.setPlaceholderText("HOST:PORT, several separated by spaces")
        self.advertise = QLineEdit(s.advertise)
        self.advertise.setPlaceholderText(f"chosen by itself: now {app.address or 'not running'}")
        self.advertise.setToolTip(
            "The address other machines dial to reach this one. Empty: the address of the "
            "network interface that reaches the bootstrap server, else the LAN's"
        )
        self.programs = {}
        for program in PROGRAMS:
            edit = QLineEdit(getattr(s, program))
            found = find_program(program)
            edit.setPlaceholderText(f"found: {found}" if found else "not found: choose it")
            self.programs[program] = edit
        self.lan = QCheckBox("Find and be found by farm nodes on this network (zeroconf)")
        self.lan.setChecked(s.lan_discovery)
        self.farm_key = QLineEdit(s.farm_key_file)
        self.data_dir = QLineEdit(s.data_dir)
        self.data_dir.setPlaceholderText(str(app.default_data_dir))
        self.output = QLineEdit(s.output_folder)
        self.output.setPlaceholderText(str(Path.home() / "peerfarm-output"))
        self.slots = QSpinBox()
        self.slots.setRange(0, 1024)
        self.slots.setValue(s.slots)
        self.tags = QLineEdit(", ".join(s.tags))
        self.tags.setPlaceholderText("none (e.g. gpu, lab2)")
        self.tags.setToolTip(
            "Tags this computer advertises to the farm: jobs submitted with "
            "--require TAG (or Requires in the submit dialog) render only on nodes with it"
        )
        self.tray = QCheckBox("Keep rendering in the background when the window is closed")
        self.tray.setChecked(s.keep_rendering_in_tray)

        form = QFormLayout()
        form.addRow("This machine's name", self.name)
        form.addRow("Listen address", self.listen)
        form.addRow("Bootstrap servers", self.bootstraps)
        form.addRow("Address peers dial", self.advertise)
        form.addRow("", self.lan)
        form.addRow("Farm key file", path_row(self.farm_key, self, False, "Farm key file"))
        form.addRow("Data folder", path_row(self.data_dir, self, True, "Data folder"))
        form.addRow("Default output folder", path_row(self.output, self, True, "Output folder"))
        form.addRow("Renderer slots", self.slots)
        form.addRow("Tags", self.tags)
        for program, label in (("blender", "Blender"), ("povray", "POV-Ray"), ("ffmpeg", "ffmpeg")):
            title = f"{label} program"
            form.addRow(title, path_row(self.programs[program], self, False, title))
        form.addRow("", self.tray)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b71c1c;")
        self.error.hide()
        hint = QLabel(
            "Name, addresses, data folder, farm key, tags and programs apply when the node "
            "restarts."
        )
        hint.setStyleSheet("color: #6b6b6b;")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(hint)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.needs_restart = False

    def values(self) -> Settings:
        return dataclasses.replace(
            self.app.store.effective,
            name=self.name.text().strip(),
            listen=self.listen.text().strip(),
            bootstraps=parse_bootstraps(self.bootstraps.text()),
            lan_discovery=self.lan.isChecked(),
            farm_key_file=self.farm_key.text().strip(),
            data_dir=self.data_dir.text().strip(),
            output_folder=self.output.text().strip(),
            slots=self.slots.value(),
            keep_rendering_in_tray=self.tray.isChecked(),
            advertise=self.advertise.text().strip(),
            tags=tuple(
                part.strip().lower() for part in re.split(r"[\s,;]+", self.tags.text()) if part
            ),
            **{program: edit.text().strip() for program, edit in self.programs.items()},
        )

    def save(self) -> None:
        new = self.values()
        try:
            new.check()
        except SettingsError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        old = self.app.store.effective
        changes = {
            f.name: getattr(new, f.name)
            for f in dataclasses.fields(Settings)
            if getattr(new, f.name) != getattr(old, f.name)
        }
        if changes:
            self.app.store.update(**changes)
        if "slots" in changes:
            self.app.set_slots(new.slots)
        self.needs_restart = any(name in changes for name in RESTART_FIELDS)
        self.accept()
