
*€çÀóB	typed_f16