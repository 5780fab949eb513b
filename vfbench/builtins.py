"""Lazy declarations of the built-in registry entries (nothing heavy is imported here).

Each section belongs to one subsystem; the target module registers the real object with the
same name when it is imported.
"""

from vfbench.registry import DATASETS, EXTRACTORS, GENERATORS, METRICS

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
