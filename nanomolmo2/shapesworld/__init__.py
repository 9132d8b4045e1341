"""ShapesWorld: the built-in synthetic dataset (images and videos of coloured shapes with exact masks).

- scene.py        shapes, colours, backgrounds, levels; one image and its mask
- tasks.py        the words: captions, pointing/counting labels, VQA, text-only tasks
- images.py       image rows and the dataset folder
- motion.py       how video objects move, appear, leave and change colour
- video_tasks.py  video captions, points, tracks and VQA
- videos.py       video rows and files
- command.py      `nanomolmo2 synth`
"""
