"""The Material Fit window (omni.ui): target picker, a reference photo per camera, preset,
Fit / Cancel, progress with live ΔE2000, result figures and an undoable write-back.

Every action calls :mod:`.controller`; nothing here reads USD beyond listing prims.
The fit runs on a background thread, awaited on Kit's event loop with
:func:`.controller.run_async`, so the UI stays responsive.
"""

import asyncio
import tempfile

import omni.kit.commands
import omni.ui as ui
import omni.usd

from . import controller

__all__ = ["MaterialFitWindow"]



#: the fit's renderers, default first (:data:`pbrfit.options.BACKENDS`)
_BACKENDS = tuple(controller.BACKENDS)

class MaterialFitWindow(ui.Window):
    """The extension's window. Rebuild with :meth:`refresh` after the stage changes."""

    def __init__(self, title: str, **kwargs):
        super().__init__(title, width=460, height=640, **kwargs)
        self._session = None
        self._task = None
        self._result = None
        self._target_model = ui.SimpleStringModel("")
        self._preset_names = controller.preset_names()
        self._iterations = ui.SimpleIntModel(60)
        self._map_models: dict = {}  # parameter -> SimpleBoolModel: fit it as a texture map
        self._map_resolution = ui.SimpleIntModel(512)
        self._progress = ui.SimpleFloatModel(0.0)
        self._image_models = {}
        self._figures_dir = tempfile.mkdtemp(prefix="pbrfit_figures_")
        self._status = None
        self._findings = None
        self._figures = None
        self._preset = None
        self._backend = None
        self.frame.set_build_fn(self._build)

    # --- layout ---------------------------------------------------------------------------

    def _stage(self):
        return omni.usd.get_context().get_stage()

    def _build(self):
        stage = self._stage()
        with ui.ScrollingFrame():
            with ui.VStack(spacing=6, height=0):
                if stage is None:
                    ui.Label("Open a stage first.")
                    return
                ui.Label("Target mesh", style={"font_size": 16})
                with ui.HStack(height=22):
                    ui.StringField(self._target_model)
                    ui.Button("Use selection", width=110, clicked_fn=self._use_selection)
                ui.Label("Reference photo per camera (EXR linear, or sRGB PNG/JPEG/TIFF)", style={"font_size": 16})
                for cam in controller.list_cameras(stage):
                    ref = controller.get_reference(stage, cam)
                    model = ui.SimpleStringModel(ref["image_asset"] if ref else "")
                    self._image_models[cam] = model
                    with ui.HStack(height=22):
                        ui.Label(cam, width=160, elided_text=True)
                        ui.StringField(model)
                        ui.Button("Set", width=50, clicked_fn=lambda c=cam, m=model: self._set_reference(c, m))
                with ui.HStack(height=22):
                    ui.Label("Parameters to fit", width=140)
                    self._preset = ui.ComboBox(0, *self._preset_names)
                with ui.HStack(height=22):
                    ui.Label("Renderer", width=140)
                    self._backend = ui.ComboBox(0, *_BACKENDS)
                with ui.HStack(height=22):
                    ui.Label("Iterations", width=140)
                    ui.IntField(self._iterations)
                with ui.HStack(height=22):
                    ui.Label("Texture maps", width=140)
                    for name in controller.TEXTURE_MAPS:
                        model = self._map_models.setdefault(name, ui.SimpleBoolModel(False))
                        ui.CheckBox(model, width=18)
                        ui.Label(name.replace("_", " "), width=0)
                with ui.HStack(height=22):
                    ui.Label("Map size", width=140)
                    ui.IntField(self._map_resolution)
                with ui.HStack(height=28):
                    ui.Button("Fit", clicked_fn=self._on_fit)
                    ui.Button("Cancel", clicked_fn=self._on_cancel)
                    ui.Button("Write back", clicked_fn=self._on_write_back)
                ui.ProgressBar(self._progress, height=20)
                self._status = ui.Label("", word_wrap=True)
                self._findings = ui.VStack(spacing=2, height=0)
                self._figures = ui.VStack(spacing=4, height=0)

    def refresh(self):
        self.frame.rebuild()

    # --- actions --------------------------------------------------------------------------

    def _say(self, text: str):
        if self._status is not None:
            self._status.text = text

    def _use_selection(self):
        paths = omni.usd.get_context().get_selection().get_selected_prim_paths()
        if paths:
            self._target_model.set_value(paths[0])

    def _set_reference(self, camera_path: str, model):
        try:
            controller.set_reference(self._stage(), camera_path, model.get_value_as_string())
            self._say(f"{camera_path}: reference set")
        except controller.InputError as e:
            self._say(str(e))

    def _on_fit(self):
        if self._session is not None and self._session.running:
            self._say("a fit is already running; cancel it first")
            return
        if self._preset is None or self._stage() is None:
            return
        preset = self._preset_names[self._preset.model.get_item_value_model().as_int]
        try:
            backend = _BACKENDS[self._backend.model.get_item_value_model().as_int]
            maps = [n for n, m in self._map_models.items() if m.get_value_as_bool()]
            options = controller.make_options(preset, iterations=self._iterations.as_int, backend=backend,
                                              maps=maps, map_resolution=self._map_resolution.as_int)
            self._session = controller.FitSession(self._stage(), self._target_model.get_value_as_string(), options)
            self._session.start()  # reads the stage here, on Kit's main thread
        except controller.InputError as e:
            self._say(str(e))
            return
        self._progress.set_value(0.0)
        self._task = asyncio.ensure_future(self._await_fit(self._session))

    async def _await_fit(self, session):
        def on_progress(p):  # work units of a total fixed when the fit starts
            self._progress.set_value(min(1.0, p.iteration / max(p.total, 1)))
            self._say(controller.describe_progress(p))

        try:
            self._result = await controller.run_async(session, on_progress=on_progress)
        except controller.FitCancelled:
            self._say("cancelled; nothing was written")
            return
        except controller.PbrfitError as e:  # an input error, or a failed fit: one line, back to idle
            self._say(str(e).splitlines()[0])
            return
        except Exception as e:  # a bug: one line here, the traceback in Kit's log
            print(session.details or repr(e))
            self._say(session.message or f"fit failed: {type(e).__name__}: {e}")
            return
        self._progress.set_value(1.0)
        mean = self._result.metrics.get("train", {}).get("mean", {}).get("de2000_mean", float("nan"))
        self._say(f"done ({self._result.stopped}); train ΔE2000 mean {mean:.2f}. Write back to apply it.")
        self._show_findings()
        self._show_figures()

    def _show_findings(self):
        """Plausibility findings and what each written format drops (as material.json has them)."""
        if self._findings is None:
            return
        self._findings.clear()
        found = controller.result_findings(self._result, self._session.options)
        with self._findings:
            for f in found["findings"]:
                colour = 0xFF4040E0 if f["severity"] == "error" else 0xFF40B0E0 if f["severity"] == "warning" \
                    else 0xFFB0B0B0
                ui.Label(f"{f['severity']}: {f['parameter']}: {f['message']}", word_wrap=True,
                         style={"color": colour})
            for target, lines in found["export_losses"].items():
                for line in lines:
                    ui.Label(f"{target} drops: {line.removeprefix(target + ': ')}", word_wrap=True,
                             style={"color": 0xFFB0B0B0})

    def _show_figures(self):
        if self._figures is None:
            return
        self._figures.clear()
        with self._figures:
            for fig in controller.result_figures(self._result, self._figures_dir):
                ui.Label(f"{fig['name']} ({fig['split']}): ΔE2000 mean {fig['de2000_mean'] or 0:.2f}")
                with ui.HStack(height=120, spacing=4):
                    for key in ("reference", "fit", "de_map"):
                        ui.Image(fig[key], width=120, height=120)

    def _on_cancel(self):
        if self._session is not None:
            self._session.cancel()

    def _on_write_back(self):
        if self._result is None or self._session is None:
            self._say("fit first")
            return
        try:
            omni.kit.commands.execute("PbrfitWriteBackMaterial", target_path=self._session.scene.target,
                                      material=self._result.material, stage=self._stage())
            self._say("material written to the pbrfit sublayer and bound (Ctrl+Z undoes it)")
        except controller.InputError as e:
            self._say(str(e))

    def destroy(self):
        if self._session is not None:
            self._session.cancel()
        super().destroy()
