"""Lazy declarations of the built-in registry entries (nothing heavy is imported here).

Each section belongs to one subsystem; the target module registers the real object with the
same name when it is imported.
"""

from vfbench.registry import DATASETS, EXTRACTORS, GENERATORS

# -- datasets ---------------------------------------------------------------------------------
DATASETS.add_lazy("shapes", "vfbench.data.shapes:ShapesDataset",
                  description="built-in procedural clips: content (shape x colour x texture) x motion")
DATASETS.add_lazy("taichi", "vfbench.data.folders:TaiChiDataset",
                  description="TaiChi-HD from a local folder (train/ test/), 16 frames at stride 4")
DATASETS.add_lazy("ucf101", "vfbench.data.folders:UCF101Dataset",
                  description="UCF-101 class folders + ucfTrainTestlist, 101 class labels")
DATASETS.add_lazy("sky", "vfbench.data.folders:SkyDataset",
                  description="Sky Time-lapse sky_train/ sky_test/ frame folders")
DATASETS.add_lazy("weizmann", "vfbench.data.folders:WeizmannDataset",
                  description="Weizmann actions (person x action labels) from a local folder")
DATASETS.add_lazy("folder", "vfbench.data.folders:FolderDataset",
                  description="any folder of videos (mp4/avi) or frame folders (png/jpg)")

# -- generators -------------------------------------------------------------------------------
GENERATORS.add_lazy("videofusion", "vfbench.generators.videofusion:VideoFusion",
                    description="decomposed diffusion: shared base noise + per-frame residual (Luo et al. 2023)")
GENERATORS.add_lazy("vdm", "vfbench.generators.vdm:VDM",
                    description="video diffusion with a factorized space-time U-Net (Ho et al. 2022)")
GENERATORS.add_lazy("vidm", "vfbench.generators.vidm:VIDM",
                    description="content DPM + autoregressive motion DPM with PosGN (Mei & Patel 2023)")

# -- feature extractors and metrics -----------------------------------------------------------
# (declared by the metrics subsystem below)

# metrics subsystem: statistics/scores (metrics/protocols.py registers the MetricSpec objects)
EXTRACTORS.add_lazy("c3d-ucf101", "vfbench.metrics.c3d:C3DExtractor",
                    description="C3D UCF-101 class posteriors for the video IS (user-supplied weights)")
# The metric definitions themselves register every MetricSpec (name, description, higher_is_better);
# the module needs only dataclasses, so importing it here keeps `vfbench ls` light.
import vfbench.metrics.protocols  # noqa: E402,F401
EXTRACTORS.add_lazy("i3d", "vfbench.metrics.i3d_extractor:I3DExtractor",
                    description="I3D Kinetics-400 logits (TF-Hub FVD/KVD network), presets reference | stylegan-v | tats | latte | cd-fvd")
EXTRACTORS.add_lazy("shapes-net", "vfbench.metrics.shapes_net:ShapesNetExtractor",
                    description="built-in 3D CNN on the shapes factors (features, content/motion posteriors)")
