"""The 28 HPA 2018 localization classes and the channel order, stated once."""

NUM_CLASSES = 28

CLASS_NAMES = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)

# Channel order inside the toolkit: every array with a channel axis is (red, green, blue, yellow).
# red = microtubules, green = protein of interest, blue = nucleus, yellow = endoplasmic reticulum.
CHANNELS = ("red", "green", "blue", "yellow")

# Per-class image counts in the real 2018 training set (31,072 images) and how many
# images carry 1..5 labels. The synthetic generator samples labels from these.
REAL_CLASS_COUNTS = (
    12885, 1254, 3621, 1561, 1858, 2513, 1008, 2822, 53, 45, 28, 1093, 688, 537,
    1066, 21, 530, 210, 902, 1482, 172, 3777, 802, 2965, 322, 8228, 328, 11,
)
REAL_LABELS_PER_IMAGE = {1: 15126, 2: 12485, 3: 3160, 4: 299, 5: 2}
REAL_NUM_IMAGES = 31072
