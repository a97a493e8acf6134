"""Write a fitted material back onto a USD stage, non-destructively and undoably.

Host-free (pxr only): the CLI (``pbrfit fit --write-back``) and the Omniverse extension
both use :func:`write_back` and :func:`undo`.

What is authored
----------------
* A ``UsdShade.Material`` (default ``/<defaultPrim>/Looks/pbrfit_<target name>``, or
  ``/Looks/pbrfit_<target name>`` without a default prim) carrying OmniPBR (MDL;
  ``OmniPBR_ClearCoat`` when ``coat_weight > 0``), a UsdPreviewSurface fallback and the
  OpenPBR MaterialX network, by :func:`pbrfit.export.usd_material.author_material`. A
  missing ``Looks`` parent is defined as a ``Scope``.
* A direct binding of that Material on the target Mesh (``UsdShade.MaterialBindingAPI``).

Where it is authored (the *edit layer*)
---------------------------------------
By default a NEW layer file next to the root layer, ``<root stem>.pbrfit.usda``, inserted
as the strongest sublayer of the root layer (``./<name>``, in memory only: the user's root
layer FILE is never rewritten; a host saves its root layer when the user says so). An
existing ``<root stem>.pbrfit.usda`` is reused (its other content kept). ``edit_layer`` may
name another file, an ``Sdf.Layer``, a layer already in the stage's layer stack (no new
sublayer entry), or the root layer itself (then, and only then, the root layer file is
rewritten).

Failure and undo
----------------
Before authoring, the edit layer's content and the root's ``subLayerPaths`` are copied;
on ANY exception both are restored, so the stage is never left half-written, and no file
is touched. The edit layer is saved (when ``save=True`` and it has a file) only after
authoring succeeded, atomically (:func:`save_layer`). :func:`undo` restores
the same copy (removing the material, the binding and the sublayer entry) and, if the
edit layer had been saved, deletes the file it created or re-saves the previous content.
Undo is exact for a layer nobody else edited in between (the pbrfit sublayer's purpose).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from pxr import Sdf, Tf, Usd, UsdGeom, UsdShade

from .errors import InputError
from .export.usd_material import AUTHORED_SHADERS, author_material
from .usd_stage import find_descendant

__all__ = ["WriteBackRecord", "write_back", "check_write_back", "undo", "default_edit_layer_path",
           "default_material_path", "save_layer"]

#: Shader prims under a Material that pbrfit authors (anything else is the user's).
_OWN_SHADERS = AUTHORED_SHADERS


@dataclass
class WriteBackRecord:
    """What :func:`write_back` authored: enough to :func:`undo` it.

    Attributes:
        root_layer: identifier of the stage's root layer.
        target_path: the Mesh the material was bound to.
        material_path: the Material authored.
        edit_layer: identifier of the layer authored into.
        edit_layer_file: its file (absolute), or None for an in-memory layer.
        created_file: the file did not exist before this write-back.
        sublayer_entry: the entry inserted at the front of the root's ``subLayerPaths``,
            or None when none was inserted.
        previous_binding: the target's direct material binding before ("" when none).
        saved: the edit layer was saved to ``edit_layer_file``.
        losses: what the lossy targets dropped or approximated, one line each.
        map_files: the texture map files written beside the edit layer (absolute); undo
            deletes them.
    """

    root_layer: str
    target_path: str
    material_path: str
    edit_layer: str
    edit_layer_file: str | None
    created_file: bool
    sublayer_entry: str | None
    previous_binding: str
    saved: bool
    losses: list[str] = field(default_factory=list)
    map_files: list[str] = field(default_factory=list)
    _previous_content: Sdf.Layer | None = field(default=None, repr=False, compare=False)
    _layer: Sdf.Layer | None = field(default=None, repr=False, compare=False)


def _root_file(stage: Usd.Stage) -> Path | None:
    root = stage.GetRootLayer()
    return Path(root.realPath) if root.realPath else None


def default_edit_layer_path(stage: Usd.Stage) -> Path:
    """``<root dir>/<root stem>.pbrfit.usda``.

    Raises:
        InputError: the root layer is in memory only (give ``edit_layer``).
    """
    root = _root_file(stage)
    if root is None:
        raise InputError("the stage's root layer has no file; save the stage first or give an edit layer path")
    return root.with_name(f"{root.stem}.pbrfit.usda")


def default_material_path(stage: Usd.Stage, target: Usd.Prim) -> str:
    """``/<defaultPrim>/Looks/pbrfit_<target name>``, or ``/Looks/pbrfit_<target name>``."""
    default = stage.GetDefaultPrim()
    base = default.GetPath() if default else Sdf.Path.absoluteRootPath
    return str(base.AppendChild("Looks").AppendChild(Tf.MakeValidIdentifier(f"pbrfit_{target.GetName()}")))


def save_layer(layer: Sdf.Layer) -> None:
    """Save ``layer`` to its file atomically, in its own format.

    ``Sdf.Layer.Save`` writes through ``ArFilesystemWritableAsset``, i.e. ``TfSafeOutputFile``
    in replace mode: a temporary sibling file renamed over the target when complete, so a
    reader sees the old file or the new one (the contract of :mod:`pbrfit.atomic`). Saving
    through USD also clears the layer's dirty flag, which an external write would not.

    Raises:
        InputError: the layer has no file, or the file cannot be written.
    """
    path = layer.realPath or ("" if layer.anonymous else layer.identifier)
    if not path:
        raise InputError(f"layer {layer.identifier} is in memory only; give it a file path to save it")
    directory = Path(path).parent
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        raise InputError(f"cannot write {path}: directory {directory} is missing or not writable; "
                         "choose another edit layer path")
    try:
        ok = layer.Save(force=True)
    except Tf.ErrorException as e:
        raise InputError(f"USD could not write {path}: {' '.join(str(e).split())[:200]}") from None
    if not ok:
        raise InputError(f"USD could not write {path}; check the directory is writable")


def _same_file(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    with contextlib.suppress(OSError):
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    return os.path.abspath(a) == os.path.abspath(b)


def _edit_layer_path(stage: Usd.Stage, edit_layer) -> str:
    """The file of an edit layer given by path (or None: the default), checked for its
    name and folder; nothing is opened or created."""
    path = str(default_edit_layer_path(stage) if edit_layer is None
               else Path(os.path.abspath(Path(edit_layer).expanduser())))
    if _same_file(path, stage.GetRootLayer().realPath):
        return path
    if os.path.isdir(path):
        raise InputError(f"edit layer {path} is a directory; give a .usda/.usd/.usdc file")
    fmt = Sdf.FileFormat.FindByExtension(Path(path).suffix.lstrip("."))
    if fmt is None or Path(path).suffix.lower() not in (".usda", ".usd", ".usdc"):
        raise InputError(f"edit layer {path} must end in .usda, .usd or .usdc")
    if not Path(path).parent.is_dir():
        raise InputError(f"edit layer {path}: directory {Path(path).parent} does not exist; create it first")
    return path


def check_write_back(stage: Usd.Stage, target_path: str, *, edit_layer=None,
                     material_path: str | None = None) -> str | None:
    """Everything :func:`write_back` needs, checked without changing the stage or a file:
    call it before a long fit, so that a write-back cannot fail only at the end.

    Returns:
        The edit layer's file (absolute), or None for an in-memory layer.

    Raises:
        InputError: as :func:`write_back`, plus an edit layer (or its folder) that cannot
            be written and an existing edit layer file that USD cannot read.
    """
    where = _root_file(stage) or stage.GetRootLayer().identifier
    target = find_descendant(stage, str(target_path), UsdGeom.Mesh, "Mesh", where)
    _check_material_path(stage, _material_path(stage, target, material_path))
    if isinstance(edit_layer, Sdf.Layer):
        path = edit_layer.realPath or None
    else:
        path = _edit_layer_path(stage, edit_layer)
    if path is None:
        return None
    folder = Path(path).parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"edit layer {path}: cannot write in {folder} (read-only or no permission); "
                         "choose another --edit-layer")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise InputError(f"edit layer {path} is read-only; make it writable or choose another --edit-layer")
        if not _same_file(path, stage.GetRootLayer().realPath):
            _open_existing_layer(path)
    return path


def _open_existing_layer(path: str) -> Sdf.Layer:
    """The USD layer already at ``path``; InputError when the file is not one."""
    try:
        layer = Sdf.Layer.FindOrOpen(path)
    except Tf.ErrorException:
        layer = None
    if layer is None:
        raise InputError(f"edit layer {path} exists but is not a readable USD layer; "
                         "move it away or give another path")
    return layer


def _open_edit_layer(stage: Usd.Stage, edit_layer) -> tuple[Sdf.Layer, bool, str | None]:
    """(layer, created_file, sublayer entry to insert or None)."""
    root = stage.GetRootLayer()
    if isinstance(edit_layer, Sdf.Layer):
        layer, path = edit_layer, edit_layer.realPath or None
    else:
        path = _edit_layer_path(stage, edit_layer)
        if _same_file(path, root.realPath):
            return root, False, None
        if os.path.exists(path):
            layer = _open_existing_layer(path)
        else:
            fmt = Sdf.FileFormat.FindByExtension(Path(path).suffix.lstrip("."))
            layer = Sdf.Layer.Find(path) or Sdf.Layer.New(fmt, path)
    if layer == root:
        return root, False, None
    created = bool(path) and not os.path.exists(path)
    if layer in stage.GetLayerStack(includeSessionLayers=True):
        return layer, created, None
    if path and root.realPath:
        rel = os.path.relpath(path, os.path.dirname(root.realPath))
        entry = rel if rel.startswith("..") else "./" + rel
    else:
        entry = layer.identifier
    return layer, created, entry


def _check_material_path(stage: Usd.Stage, material_path: str) -> None:
    prim = stage.GetPrimAtPath(material_path)
    if not prim or not prim.IsA(UsdShade.Material):
        return
    material = UsdShade.Material(prim)
    for context in (UsdShade.Tokens.universalRenderContext, "mdl", "mtlx"):
        output = material.GetSurfaceOutput(context)
        if not output:
            continue
        for source in output.GetConnectedSources()[0]:
            name = source.source.GetPrim().GetName()
            if name not in _OWN_SHADERS:
                shader = UsdShade.Shader(source.source.GetPrim())
                what = (shader.GetIdAttr().Get() or shader.GetSourceAssetSubIdentifier("mdl")
                        or source.source.GetPrim().GetTypeName()) if shader else "a node graph"
                raise InputError(f"material {material_path} already exists with a surface shader pbrfit did not "
                                 f"author ({source.source.GetPath()}, {what}); choose another material path")


def _material_path(stage: Usd.Stage, target: Usd.Prim, material_path: str | None) -> str:
    material_path = str(material_path or default_material_path(stage, target))
    if not Sdf.Path.IsValidPathString(material_path) or not Sdf.Path(material_path).IsAbsolutePath() \
            or not Sdf.Path(material_path).IsPrimPath() or Sdf.Path(material_path).pathElementCount < 1:
        raise InputError(f"material path {material_path!r} must be an absolute prim path, e.g. /World/Looks/paint")
    return material_path


def _bind(stage: Usd.Stage, target: Usd.Prim, material: UsdShade.Material) -> None:
    UsdShade.MaterialBindingAPI.Apply(target).Bind(material)


def _write_maps(layer: Sdf.Layer, material_path: str, maps: Mapping) -> tuple[dict, list[str]]:
    """The fitted maps as EXR files in ``<edit layer stem>_textures/`` beside the edit layer:
    (texture entries with paths relative to the layer, the files written)."""
    from .images import write_exr

    if not maps:
        return {}, []
    if not layer.realPath:
        raise InputError("texture maps need an edit layer saved as a file (the maps are files beside it); "
                         "give an edit layer path")
    folder_name = f"{Path(layer.realPath).stem}_textures"
    folder = Path(layer.realPath).parent / folder_name
    stem = Sdf.Path(material_path).name
    entries, written = {}, []
    try:
        folder.mkdir(exist_ok=True)
        for name, m in maps.items():
            path = folder / f"{stem}_{name}.exr"
            texels = m.texels[..., 0] if m.texels.shape[-1] == 1 else m.texels
            write_exr(path, texels)
            written.append(str(path))
            entries[name] = {"file": f"./{folder_name}/{path.name}",
                             "colorspace": "lin_rec709" if name == "base_color" else "raw",
                             "channels": int(m.texels.shape[-1]), "uv": m.uv}
    except BaseException:
        for f in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)
        raise
    return entries, written


def write_back(stage: Usd.Stage, target_path: str, material: Mapping[str, object], *, edit_layer=None,
               material_path: str | None = None, save: bool = True, openpbr: bool = True,
               maps: Mapping | None = None) -> WriteBackRecord:
    """Author ``material`` on ``stage`` and bind it to the target (see the module docstring).

    Args:
        stage: an open stage (a host's live stage or one opened from a file).
        target_path: the Mesh, or an ancestor holding exactly one Mesh (as the fit's target).
        material: canonical Blender values (:mod:`pbrfit.params`), e.g. a fit's result.
        edit_layer: None (``<root>.pbrfit.usda``, new strongest sublayer), a file path, or
            an ``Sdf.Layer``.
        material_path: the Material's prim path; None for the default.
        save: save the edit layer (atomically) when it has a file.
        openpbr: also author the OpenPBR network.
        maps: fitted texture maps ({parameter: :class:`pbrfit.texture_fit.MapResult`}),
            written as EXR files in ``<edit layer stem>_textures/`` beside the edit layer and
            wired into every network (OmniPBR's texture inputs, UsdUVTexture, OpenPBR).

    Returns:
        A :class:`WriteBackRecord` for :func:`undo`.

    Raises:
        InputError: unknown target or not a Mesh, a bad material path or values, a Material
            there whose shaders pbrfit did not author, an unusable edit layer path. The
            stage and every file are then as they were.
    """
    where = _root_file(stage) or stage.GetRootLayer().identifier
    target = find_descendant(stage, str(target_path), UsdGeom.Mesh, "Mesh", where)
    material_path = _material_path(stage, target, material_path)
    _check_material_path(stage, material_path)
    layer, created, entry = _open_edit_layer(stage, edit_layer)
    root = stage.GetRootLayer()

    previous = Sdf.Layer.CreateAnonymous(".usda")
    previous.TransferContent(layer)
    previous_sublayers = list(root.subLayerPaths)
    previous_binding = UsdShade.MaterialBindingAPI(target).GetDirectBinding().GetMaterialPath()
    previous_target = stage.GetEditTarget()
    map_files: list[str] = []
    try:
        textures, map_files = _write_maps(layer, material_path, maps or {})
        if entry is not None:
            root.subLayerPaths.insert(0, entry)
        stage.SetEditTarget(Usd.EditTarget(layer))
        looks = Sdf.Path(material_path).GetParentPath()
        if looks != Sdf.Path.absoluteRootPath and not stage.GetPrimAtPath(looks):
            UsdGeom.Scope.Define(stage, looks)
        mat, losses = author_material(stage, material_path, material, openpbr=openpbr, textures=textures)
        _bind(stage, target, mat)
    except BaseException:
        for f in map_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)
        stage.SetEditTarget(previous_target)
        with Sdf.ChangeBlock():  # one recomposition: the stage goes straight back
            layer.TransferContent(previous)
            if list(root.subLayerPaths) != previous_sublayers:
                root.subLayerPaths = previous_sublayers
        raise
    stage.SetEditTarget(previous_target)
    record = WriteBackRecord(
        root_layer=root.identifier, target_path=str(target.GetPath()), material_path=material_path,
        edit_layer=layer.identifier, edit_layer_file=layer.realPath or (None if layer.anonymous else layer.identifier),
        created_file=created, sublayer_entry=entry, previous_binding=str(previous_binding or ""),
        saved=False, losses=list(losses), map_files=map_files, _previous_content=previous, _layer=layer)
    if save and record.edit_layer_file:
        try:
            save_layer(layer)
        except BaseException:
            undo(stage, record)
            raise
        record.saved = True
    return record


def undo(stage: Usd.Stage, record: WriteBackRecord) -> None:
    """Remove what :func:`write_back` authored: the edit layer's previous content comes back,
    the sublayer entry goes, and a saved edit layer file is deleted (if the write-back
    created it) or re-saved with its previous content.

    Raises:
        InputError: ``record`` belongs to another stage.
    """
    root = stage.GetRootLayer()
    if root.identifier != record.root_layer:
        raise InputError(f"this write-back was made on {record.root_layer}, not on {root.identifier}")
    layer = record._layer or Sdf.Layer.Find(record.edit_layer)
    with Sdf.ChangeBlock():
        if layer is not None and record._previous_content is not None:
            layer.TransferContent(record._previous_content)
        if record.sublayer_entry is not None:
            paths = list(root.subLayerPaths)
            if record.sublayer_entry in paths:
                paths.remove(record.sublayer_entry)
                root.subLayerPaths = paths
    for f in record.map_files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f)
    record.map_files = []
    if record.saved and record.edit_layer_file:
        if record.created_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record.edit_layer_file)
        elif layer is not None:
            save_layer(layer)
        record.saved = False
