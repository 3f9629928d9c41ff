"""The first-start guide: join a farm, create one, or try peerfarm on this machine alone."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QFrame,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from peerfarm.runtime.addresses import advertised_host
from peerfarm.security.farm_key import config_dir, default_key_path, new_key, write_key
from ui.settings import SettingsError
from ui.settings_dialog import parse_bootstraps, path_row

if TYPE_CHECKING:
    from ui.app import PeerfarmApp

FARM_PORT = 7100

JOIN, CREATE, TRY = "join", "create", "try"


def lan_address() -> str:
    """This machine's address on the LAN, as other machines would dial it (best guess:
    the node makes the same choice, peerfarm.runtime.addresses.advertised_host)."""
    return advertised_host("0.0.0.0")[0]


def _note(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet("color: #555555; margin-left: 22px;")
    return label


class FirstRunDialog(QDialog):
    def __init__(self, app: PeerfarmApp, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.app = app
        self.setWindowTitle("Welcome to peerfarm")
        self.created_key = ""  # the farm key file "Create a new farm" wrote
        self.setMinimumWidth(620)
        intro = QLabel(
            "<b>peerfarm turns the machines of your team into one render farm.</b><br>"
            "This computer will render frames for the farm when it is free, and you can "
            "send your own animations to the whole farm."
        )
        intro.setWordWrap(True)

        self.join = QRadioButton("Join a farm")
        self.create = QRadioButton("Create a new farm")
        self.try_here = QRadioButton("Just try it on this computer")
        group = QButtonGroup(self)
        for b in (self.join, self.create, self.try_here):
            group.addButton(b)
        self.join.setChecked(True)

        self.bootstraps = QLineEdit()
        self.bootstraps.setPlaceholderText(
            "e.g. farm-server:7000 (leave empty to search this network)"
        )
        self.farm_key = QLineEdit()
        join_form = QFormLayout()
        join_form.addRow("Farm address", self.bootstraps)
        join_form.addRow("Farm key file", path_row(self.farm_key, self, False, "Farm key file"))
        join_box = QFrame()
        join_box.setLayout(join_form)
        join_box.setContentsMargins(18, 0, 0, 0)
        self.address = f"{lan_address()}:{FARM_PORT}"

        self.name = QLineEdit(socket.gethostname()[:64])
        self.slots = QSpinBox()
        self.slots.setRange(0, 1024)
        self.slots.setValue(os.cpu_count() or 1)
        self.slots.setToolTip("How many frames this computer renders at once")
        machine = QFormLayout()
        machine.addRow("This computer's name on the farm", self.name)
        machine.addRow("Frames rendered at once", self.slots)

        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b71c1c;")
        self.error.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        self.start_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.start_button.setText("Start")
        buttons.accepted.connect(self.finish)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addSpacing(8)
        layout.addWidget(self.join)
        layout.addWidget(
            _note(
                "Someone gave you the farm's key file (only computers holding it get in) "
                "and maybe its address (its bootstrap server). Without an address, peerfarm "
                "finds the farm's nodes on this network by itself."
            )
        )
        layout.addWidget(join_box)
        layout.addWidget(self.create)
        layout.addWidget(
            _note(
                f"This computer is the farm's first node. peerfarm makes the farm's key "
                f"file; copy it to the computers that join. They find this one on the "
                f"network, or join with the address {self.address}."
            )
        )
        layout.addWidget(self.try_here)
        layout.addWidget(
            _note("A farm of one, on this computer only: nothing is shared on the network.")
        )
        layout.addSpacing(8)
        layout.addLayout(machine)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.join.toggled.connect(join_box.setEnabled)

    @property
    def choice(self) -> str:
        return JOIN if self.join.isChecked() else CREATE if self.create.isChecked() else TRY

    def changes(self) -> dict:
        common = {"name": self.name.text().strip(), "slots": self.slots.value(), "setup_done": True}
        if self.choice == JOIN:
            if not self.farm_key.text().strip():
                raise SettingsError(
                    "choose the farm key file you were given: only computers holding the "
                    "farm's key can join it (whoever created the farm has it)"
                )
            return {
                **common,
                "listen": f"0.0.0.0:{FARM_PORT}",
                "bootstraps": parse_bootstraps(self.bootstraps.text()),
                "farm_key_file": self.farm_key.text().strip(),
                "lan_discovery": True,
            }
        if self.choice == CREATE:
            return {
                **common,
                "farm_key_file": "",  # made in finish(), once everything else is fine
                "listen": f"0.0.0.0:{FARM_PORT}",
                "bootstraps": (),
                "lan_discovery": True,
            }
        return {**common, "listen": "127.0.0.1:0", "bootstraps": (), "lan_discovery": False}

    def finish(self) -> None:
        import dataclasses

        try:
            changes = self.changes()
            dataclasses.replace(self.app.store.effective, **changes).check()
            if self.choice == CREATE:
                changes["farm_key_file"] = str(create_farm_key())
        except (SettingsError, OSError) as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        self.app.store.update(**changes)
        self.created_key = changes.get("farm_key_file", "") if self.choice == CREATE else ""
        self.accept()


def create_farm_key() -> Path:
    """Write a new farm key: the default key file, or beside it if that one exists
    (a key is never overwritten: computers holding it would be locked out)."""
    key = new_key()
    path = default_key_path()
    if path.exists():
        path = config_dir() / f"farm-{key.key_id}.key"
    write_key(key, path)
    return path
