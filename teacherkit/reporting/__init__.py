"""What a person looks at after training: ``results.csv``/``results.png`` per teacher,
prediction grids, precision-recall / F1 / confusion / IoU pictures, and the one-page HTML
report of ``teacherkit report``.

This package sits beside evaluation (never imports training), so training's hooks and
``teacherkit evaluate`` can both call it. Heavy libraries (matplotlib, pycocotools) are
imported inside the functions that draw or score.
"""
