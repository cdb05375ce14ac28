"""What a firmware ELF occupies: Berkeley text/data/bss, and which named buffers (arena,
parameters, optimizer state, data set, stack reserve) take the RAM and flash. Read from the ELF
itself, so the report describes what was linked, not an estimate."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from .ctext import WEIGHTS
from .errors import OptionError


@dataclass
class Part:
    what: str
    symbol: str
    bytes: int
    region: str  # "RAM" or "flash"


@dataclass
class ElfSize:
    text: int  # code + read-only data (flash)
    data: int  # initialised RAM (also stored in flash)
    bss: int  # zeroed RAM, including the stack reserve section
    parts: list[Part]

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss

    def to_json(self) -> dict:
        return {"text": self.text, "data": self.data, "bss": self.bss, "flash": self.flash, "ram": self.ram,
                "parts": [vars(p) for p in self.parts]}


def _parts_wanted(prefix: str) -> dict[str, str]:
    return {f"{prefix}_arena": "arena (activations + gradients)", f"{prefix}_params": "trainable parameters",
            f"{prefix}_state": "optimizer state", f"{prefix}_running": "running statistics (--mode train)",
            f"{prefix}_round_start": "federated round-start copy", f"{prefix}_round_state": "federated round-start state",
            f"{prefix}_frozen": "frozen parameters",
            f"{prefix}_consts": "other constants", "mt_data_x": "data set: samples",
            "mt_data_y": "data set: labels", "mt_msg": "serial message buffer (federated harness)"}


def measure(elf_path: Path, prefix: str) -> ElfSize:
    if not elf_path.is_file():
        raise OptionError(f"no firmware at '{elf_path}': run `mcutrain build` first")
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        text = data = bss = 0
        for s in elf.iter_sections():
            flags = s["sh_flags"]
            if not flags & SH_FLAGS.SHF_ALLOC:
                continue
            if not flags & SH_FLAGS.SHF_WRITE:
                text += s["sh_size"]
            elif s["sh_type"] == "SHT_NOBITS":
                bss += s["sh_size"]
            else:
                data += s["sh_size"]
        parts = _symbols(elf, _parts_wanted(prefix), prefix)
        stack = elf.get_section_by_name(".stack")
        if stack is not None:
            parts.append(Part("stack (+ heap) reserve", ".stack", stack["sh_size"], "RAM"))
    return ElfSize(text, data, bss, parts)


def _symbols(elf: ELFFile, wanted: dict[str, str], prefix: str) -> list[Part]:
    """The wanted buffers, and the frozen int8 weights (the arrays <prefix>_w<k>) as one part."""
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None:
        return []
    found, weights = {}, Part("frozen int8 weights", f"{prefix}_{WEIGHTS}*", 0, "flash")
    for sym in symtab.iter_symbols():
        if sym["st_info"]["type"] != "STT_OBJECT" or not sym["st_size"]:
            continue
        name = sym.name.removesuffix("_words")  # a blob initialised as words (its .inc, integer parameters)
        if name in wanted:
            section = elf.get_section(sym["st_shndx"]) if isinstance(sym["st_shndx"], int) else None
            writable = section is not None and section["sh_flags"] & SH_FLAGS.SHF_WRITE
            found[name] = Part(wanted[name], sym.name, sym["st_size"], "RAM" if writable else "flash")
        elif re.fullmatch(rf"{re.escape(prefix)}_{WEIGHTS}\d+", sym.name):
            weights.bytes += sym["st_size"]
    return [found[name] for name in wanted if name in found] + ([weights] if weights.bytes else [])


def symbol_address(elf_path: Path, name: str) -> int | None:
    with open(elf_path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        syms = symtab.get_symbol_by_name(name) if symtab else None
        return syms[0]["st_value"] & ~1 if syms else None
