"""pbrfit: fit Blender Principled / OpenPBR materials to reference photographs.

The host-independent engine. Entry points: :func:`pbrfit.job.load_job`,
:func:`pbrfit.fit.fit_material`, :func:`pbrfit.outputs.write_fit_outputs`, and the
``pbrfit`` command (:mod:`pbrfit.cli`). This package never imports bpy or omni.
"""

__version__ = "0.2.0"
