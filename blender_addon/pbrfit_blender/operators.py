"""Operators: Fit (modal with a worker thread in the UI, synchronous headless), Cancel,
Restore previous, and adding/removing validation views.

Threading: the scene is extracted on the main thread; the fit runs as the engine's
:class:`pbrfit.session.FitSession` (a background thread that never touches Blender data);
a window-manager timer (0.1 s) polls it on the main thread, updates the progress shown by
the panel and, when the fit is done, writes the material back (one undo step). Esc or the
Cancel button cancels it: the fit stops at its next check and the material is left as it
was. Whatever ends a fit (done, cancelled, an error) returns the panel to idle with one
line of status or error.

``bpy.ops.pbrfit.fit()`` runs synchronously when ``bpy.app.background`` is true (modal
operators do not run headless) or when called with ``synchronous=True``.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from .deps import dependency_message

__all__ = ["CLASSES", "PBRFIT_OT_fit", "PBRFIT_OT_cancel", "PBRFIT_OT_restore",
           "PBRFIT_OT_validation_add", "PBRFIT_OT_validation_remove", "register", "unregister"]


def _target(context, name: str):
    if name:
        obj = bpy.data.objects.get(name)
        if obj is None:
            return None, f"no object named '{name}'"
        return obj, None
    obj = context.active_object
    return (obj, None) if obj is not None else (None, "no active object; select the part to fit")


def _redraw(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ("PROPERTIES", "VIEW_3D"):
                area.tag_redraw()


class PBRFIT_OT_fit(bpy.types.Operator):
    """Fit the active object's Principled BSDF to the cameras' background photographs"""

    bl_idname = "pbrfit.fit"
    bl_label = "Fit Material"
    bl_options = {"REGISTER"}

    object_name: StringProperty(name="Object", default="", description="Target object (empty: the active one)")
    copy_material: BoolProperty(name="Make a copy", default=False,
                                description="The material is shared: give this object its own copy")
    iterations: IntProperty(name="Iterations", default=-1, min=-1,
                            description="Override the panel's iterations (-1: use the panel's)")
    preset: StringProperty(name="Preset", default="", description="Override the panel's preset (a pbrfit preset name)")
    parameters: StringProperty(name="Parameters", default="",
                               description="Override: comma-separated canonical names to fit (wins over preset)")
    output_dir: StringProperty(name="Output folder", default="", subtype="DIR_PATH",
                               description="Override the panel's report folder")
    options: StringProperty(name="Options", default="", options={"SKIP_SAVE"},
                            description="Override: a JSON object of fit options under a job file's [fit] names "
                                        "(backend, time_budget, loss, seed, ...), as scripts/blender_fit.py passes "
                                        "its command line")
    synchronous: BoolProperty(name="Synchronous", default=False, options={"SKIP_SAVE"},
                              description="Fit on the main thread and return when done (scripts)")

    _session = None  # the running pbrfit.session.FitSession (one fit at a time)

    # -- helpers --------------------------------------------------------------------------

    def _fail(self, context, message: str):
        settings = context.scene.pbrfit
        settings.error, settings.status, settings.running = message, "", False
        self.report({"ERROR"}, message)
        return {"CANCELLED"}

    def _options(self, context):
        """The panel's settings, then this call's overrides (preset, parameters, iterations,
        then the ``options`` JSON), checked with the command line's rules."""
        import json

        from pbrfit.errors import InputError
        from pbrfit.options import parse_names

        from .pipeline import fit_options

        overrides = {"preset": self.preset or None,
                     "parameters": parse_names(self.parameters, "parameters") if self.parameters else None,
                     "iterations": self.iterations if self.iterations >= 0 else None}
        if self.options:
            try:
                extra = json.loads(self.options)
            except ValueError as e:
                raise InputError(f"options: not a JSON object ({e})") from None
            if not isinstance(extra, dict):
                raise InputError(f"options: must be a JSON object of fit options, got {self.options!r}")
            overrides.update(extra)
        return fit_options(context.scene.pbrfit, **overrides)

    def _copy(self, context) -> bool:
        return self.copy_material or context.scene.pbrfit.copy_material

    def _texture_folder(self, context):
        settings = context.scene.pbrfit
        return settings.texture_folder if settings.texture_storage == "FOLDER" else None

    def _out_dir(self, context):
        path = self.output_dir or context.scene.pbrfit.output_dir
        return bpy.path.abspath(path) if path else None

    # -- entry points ---------------------------------------------------------------------

    def invoke(self, context, event):
        message = dependency_message()
        if message:
            return self._fail(context, message)
        obj, err = _target(context, self.object_name)
        if err:
            return self._fail(context, err)
        from .writeback import shared_with

        if shared_with(obj) and not self._copy(context):
            return context.window_manager.invoke_props_dialog(self, title="Material is shared")
        return self.execute(context)

    def draw(self, context):
        from .writeback import shared_with

        obj, _ = _target(context, self.object_name)
        others = shared_with(obj) if obj is not None else []
        col = self.layout.column()
        col.label(text=f"'{obj.active_material.name}' is also used by {', '.join(others)}." if others else "")
        col.prop(self, "copy_material", text="Make a copy for this object")

    def execute(self, context):
        from pbrfit.errors import PbrfitError

        message = dependency_message()
        if message:
            return self._fail(context, message)
        if PBRFIT_OT_fit._session is not None:
            return self._fail(context, "a fit is already running; cancel it first")
        obj, err = _target(context, self.object_name)
        if err:
            return self._fail(context, err)
        settings = context.scene.pbrfit
        settings.error, settings.progress = "", 0.0
        try:
            options = self._options(context)
            if bpy.app.background or self.synchronous or context.window is None:
                return self._run_sync(context, obj, options)
            from .pipeline import map_list, prepare

            self._extraction = prepare(context, obj, copy_if_shared=self._copy(context),
                                       out_dir=self._out_dir(context), maps=map_list(options),
                                       texture_folder=self._texture_folder(context))
        except PbrfitError as e:
            return self._fail(context, str(e))
        return self._start_modal(context, obj, options)

    def _run_sync(self, context, obj, options):
        from pbrfit.errors import PbrfitError

        from .pipeline import fit_object

        settings = context.scene.pbrfit
        settings.status = "fitting…"
        from pbrfit.progress import LogLines

        try:  # headless: the CLI's log lines on stderr (every few seconds and at each phase)
            outcome = fit_object(context, obj, options, copy_if_shared=self._copy(context),
                                 out_dir=self._out_dir(context), texture_folder=self._texture_folder(context),
                                 progress=LogLines().progress if bpy.app.background else None)
        except PbrfitError:
            raise  # the caller's one line
        except Exception as e:  # a bug: one line in the panel, the traceback on the console
            import traceback

            traceback.print_exc()
            return self._fail(context, f"fit failed: {type(e).__name__}: {e}".splitlines()[0])
        self._report_done(context, outcome)
        return {"FINISHED"}

    def _report_done(self, context, outcome) -> None:
        settings = context.scene.pbrfit
        m = outcome.result.metrics
        text = f"ΔE2000 train {m['train']['mean']['de2000_mean']:.2f}"
        if "validate" in m:
            text += f", validate {m['validate']['mean']['de2000_mean']:.2f}"
        skipped = outcome.extraction.skipped
        settings.status = f"{text} ({outcome.result.stopped}); wrote '{outcome.material.name}'"
        settings.running, settings.progress = False, 1.0
        for line in skipped:
            self.report({"WARNING"}, line)
        self.report({"INFO"}, f"pbrfit: {settings.status}")

    def _start_modal(self, context, obj, options):
        from pbrfit.session import FitSession

        settings = context.scene.pbrfit
        for line in self._extraction.skipped:
            self.report({"WARNING"}, line)
        self._options_used, self._object_name = options, obj.name
        PBRFIT_OT_fit._session = FitSession(self._extraction.scene, options).start()
        settings.running, settings.status, settings.progress_text = True, "fitting…", "setup"
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _stop(self, context) -> None:
        context.window_manager.event_timer_remove(self._timer)
        PBRFIT_OT_fit._session = None
        context.scene.pbrfit.running = False
        _redraw(context)

    def modal(self, context, event):
        session = PBRFIT_OT_fit._session
        if session is None:  # cleared elsewhere (e.g. add-on reloaded)
            return {"CANCELLED"}
        if event.type == "ESC":
            session.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        settings = context.scene.pbrfit
        from pbrfit.progress import describe

        for p in session.poll():  # work units of a total fixed when the fit starts
            settings.progress = min(p.iteration / max(p.total, 1), 1.0)
            settings.progress_text = describe(p)
        if not session.finished:
            _redraw(context)
            return {"RUNNING_MODAL"}
        if session.state == "done":
            return self._finish(context, session.result)
        self._stop(context)  # cancelled or failed: nothing is written
        if session.state == "failed":
            if session.details:
                print(session.details)  # the traceback of a bug, for the console
            return self._fail(context, session.message)
        settings.status = "cancelled; the material is unchanged"
        self.report({"INFO"}, settings.status)
        return {"CANCELLED"}

    def _finish(self, context, result):
        from pbrfit.errors import PbrfitError

        from .pipeline import finish

        self._stop(context)
        obj = bpy.data.objects.get(self._object_name)
        try:
            if obj is None:
                raise PbrfitError(f"object '{self._object_name}' was deleted during the fit; nothing written")
            outcome = finish(context, obj, result, self._extraction, self._options_used,
                             copy_if_shared=self._copy(context), out_dir=self._out_dir(context),
                             texture_folder=self._texture_folder(context))
        except PbrfitError as e:
            return self._fail(context, str(e))
        self._report_done(context, outcome)
        return {"FINISHED"}


class PBRFIT_OT_cancel(bpy.types.Operator):
    """Stop the running fit; the material is left as it was"""

    bl_idname = "pbrfit.cancel"
    bl_label = "Cancel Fit"

    @classmethod
    def poll(cls, context):
        return PBRFIT_OT_fit._session is not None

    def execute(self, context):
        PBRFIT_OT_fit._session.cancel()
        context.scene.pbrfit.status = "cancelling…"
        return {"FINISHED"}


class PBRFIT_OT_restore(bpy.types.Operator):
    """Put back the material values from before the last pbrfit write"""

    bl_idname = "pbrfit.restore_previous"
    bl_label = "Restore Previous"
    bl_options = {"REGISTER"}

    object_name: StringProperty(name="Object", default="")

    def execute(self, context):
        message = dependency_message()
        if message:
            self.report({"ERROR"}, message)
            return {"CANCELLED"}
        from pbrfit.errors import PbrfitError

        from .writeback import restore_previous

        obj, err = _target(context, self.object_name)
        try:
            if err:
                raise PbrfitError(err)
            mat = restore_previous(obj)
        except PbrfitError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        settings = context.scene.pbrfit
        settings.status = f"restored the previous values of '{mat.name}'"
        for i in reversed(range(len(settings.findings))):  # what the write changed is undone
            if settings.findings[i].kind == "written":
                settings.findings.remove(i)
        return {"FINISHED"}


class PBRFIT_OT_validation_add(bpy.types.Operator):
    """Add a validation view: a camera, its photo, and the HDRI it was lit by"""

    bl_idname = "pbrfit.validation_add"
    bl_label = "Add Validation View"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = context.scene.pbrfit
        item = settings.validation_views.add()
        if context.scene.camera is not None:
            item.camera = context.scene.camera
        settings.validation_index = len(settings.validation_views) - 1
        return {"FINISHED"}


class PBRFIT_OT_validation_remove(bpy.types.Operator):
    """Remove the selected validation view"""

    bl_idname = "pbrfit.validation_remove"
    bl_label = "Remove Validation View"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1)

    def execute(self, context):
        settings = context.scene.pbrfit
        i = self.index if self.index >= 0 else settings.validation_index
        if 0 <= i < len(settings.validation_views):
            settings.validation_views.remove(i)
            settings.validation_index = max(0, min(i, len(settings.validation_views) - 1))
        return {"FINISHED"}


CLASSES = (PBRFIT_OT_fit, PBRFIT_OT_cancel, PBRFIT_OT_restore, PBRFIT_OT_validation_add,
           PBRFIT_OT_validation_remove)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    if PBRFIT_OT_fit._session is not None:
        PBRFIT_OT_fit._session.cancel()
        PBRFIT_OT_fit._session = None
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
