"""Common music words in other languages, and the English words they are read as.

`pipeline.semantic_tags.translate_music_words` replaces them (accents optional, case ignored,
longest phrase first) before either matcher reads a style, because the lexicon and the sentence
encoder are English-centric: "canción triste" → "song sad". Pure data.

FOREIGN_WORDS also serve as halves of German compounds ("Klaviermusik" → "piano music");
FOREIGN_FUNCTION_WORDS never do.
"""

from __future__ import annotations

FOREIGN_WORDS: tuple[tuple[str, str], ...] = (
    # Spanish / Portuguese / Italian / French / German: song, music, love
    ("canción", "song"), ("canciones", "songs"), ("canção", "song"), ("canções", "songs"),
    ("canzone", "song"), ("canzoni", "songs"), ("chanson", "song"), ("chansons", "songs"),
    ("lieder", "songs"), ("liebeslied", "love song"), ("música", "music"), ("musique", "music"),
    ("musik", "music"), ("amor", "love"), ("amore", "love"), ("amour", "love"), ("liebe", "love"),
    # moods
    ("triste", "sad"), ("tristes", "sad"), ("traurig", "sad"), ("traurige", "sad"),
    ("trauriges", "sad"), ("tristeza", "sadness"), ("alegre", "happy"), ("alegres", "happy"),
    ("allegro", "lively"), ("allegra", "happy"), ("allegre", "happy"), ("allegri", "happy"),
    ("feliz", "happy"), ("felice", "happy"), ("heureux", "happy"), ("heureuse", "happy"),
    ("joyeux", "joyful"), ("joyeuse", "joyful"), ("fröhlich", "happy"), ("fröhliche", "happy"),
    ("fröhlicher", "happy"), ("glücklich", "happy"), ("animado", "lively"), ("animada", "lively"),
    ("romántica", "romantic"), ("romántico", "romantic"), ("romântico", "romantic"),
    ("romântica", "romantic"), ("romantico", "romantic"), ("romantica", "romantic"),
    ("romantique", "romantic"), ("romantisch", "romantic"), ("romantische", "romantic"),
    ("melancólico", "melancholic"), ("melancólica", "melancholic"),
    ("malinconico", "melancholic"), ("malinconica", "melancholic"),
    ("mélancolique", "melancholic"), ("melancholisch", "melancholic"), ("saudade", "nostalgic"),
    ("nostalgique", "nostalgic"), ("oscuro", "dark"), ("oscura", "dark"), ("escuro", "dark"),
    ("dunkel", "dark"), ("dunkle", "dark"), ("düster", "dark"), ("düstere", "dark"),
    ("tranquilo", "calm"), ("tranquila", "calm"), ("tranquillo", "calm"), ("calme", "calm"),
    ("ruhig", "calm"), ("ruhige", "calm"), ("relajante", "relaxing"), ("relaxante", "relaxing"),
    ("rilassante", "relaxing"), ("relaxar", "relaxing"),
    ("relajar", "relaxing"), ("entspannen", "relaxing"), ("entspannend", "relaxing"),
    ("entspannt", "relaxed"), ("entspannte", "relaxed"), ("suave", "smooth"), ("douce", "soft"),
    ("doux", "soft"), ("dolce", "sweet"), ("sanft", "gentle"), ("sanfte", "gentle"),
    ("enérgico", "energetic"), ("energico", "energetic"), ("énergique", "energetic"),
    ("épico", "epic"), ("épique", "epic"), ("episch", "epic"), ("wütend", "angry"),
    ("rabia", "rage"), ("colère", "anger"), ("sombrío", "gloomy"),
    # situations
    ("fiesta", "party"), ("festa", "party"), ("fête", "party"), ("bailar", "dance"),
    ("dançar", "dance"), ("danser", "dance"), ("ballare", "dance"), ("tanzen", "dance"),
    ("baile", "dance"), ("noche", "night"), ("noite", "night"), ("notte", "night"),
    ("nuit", "night"), ("nacht", "night"), ("verano", "summer"), ("verão", "summer"),
    ("été", "summer"), ("sommer", "summer"), ("playa", "beach"), ("praia", "beach"),
    ("plage", "beach"), ("dormir", "sleep"), ("schlafen", "sleep"), ("dormire", "sleep"),
    ("lento", "slow"), ("lenta", "slow"), ("langsam", "slow"), ("rápido", "fast"),
    ("rápida", "fast"), ("rapide", "fast"), ("veloce", "fast"), ("schnell", "fast"),
    ("mitsingen", "singalong"), ("carnaval", "carnival"), ("karneval", "carnival"),
    # instruments
    ("guitarra", "guitar"), ("guitare", "guitar"), ("chitarra", "guitar"), ("gitarre", "guitar"),
    ("violão", "acoustic guitar"), ("klavier", "piano"), ("pianoforte", "piano"),
    ("acordeón", "accordion"), ("acordeon", "accordion"), ("accordéon", "accordion"),
    ("fisarmonica", "accordion"), ("sanfona", "accordion"), ("akkordeon", "accordion"),
    ("violon", "violin"), ("violín", "violin"), ("geige", "violin"), ("trompeta", "trumpet"),
    ("trompette", "trumpet"), ("tromba", "trumpet"), ("batería", "drums"),
    ("schlagzeug", "drums"), ("flauta", "flute"), ("flûte", "flute"),
    # genre and style words
    ("clásica", "classical"), ("clásico", "classical"), ("clássica", "classical"),
    ("classica", "classical"), ("classique", "classical"), ("klassisch", "classical"),
    ("klassische", "classical"), ("electrónica", "electronic"), ("eletrônica", "electronic"),
    ("électronique", "electronic"), ("elettronica", "electronic"), ("elektronisch", "electronic"),
    ("elektronische", "electronic"), ("alternatif", "alternative"), ("alternativo", "alternative"),
    ("celtique", "celtic"), ("balada", "ballad"), ("ballade", "ballad"), ("ballata", "ballad"),
    ("wiegenlied", "lullaby"),
    ("schlaflied", "lullaby"), ("canción de cuna", "lullaby"), ("berceuse", "lullaby"),
    ("ninna nanna", "lullaby"), ("volksmusik", "folk music"), ("volkslied", "folk song"),
    ("schlager", "schlager german pop"), ("chanson française", "french chanson"),
    ("variété", "french pop"), ("cantautor", "singer-songwriter"),
    ("cantautora", "singer-songwriter"), ("cantautore", "singer-songwriter"),
    ("cantautori", "singer-songwriter"), ("liedermacher", "singer-songwriter"),
    ("fado", "fado portuguese folk"), ("sertanejo", "sertanejo brazilian country"),
    ("forró", "forro brazilian accordion dance"),
    ("vallenato", "vallenato colombian cumbia accordion"), ("bolero", "bolero latin pop ballad"),
    ("musette", "musette french accordion waltz folk"), ("valse", "waltz"), ("walzer", "waltz"),
    ("tarantella", "tarantella italian folk dance"), ("napoletana", "neapolitan folk"),
    ("napoletane", "neapolitan folk"), ("krautrock", "krautrock german experimental rock"),
    # nationalities
    ("español", "spanish"), ("española", "spanish"), ("latina", "latin"), ("latino", "latin"),
    ("mexicano", "mexican"), ("mexicana", "mexican"), ("brasileiro", "brazilian"),
    ("brasileira", "brazilian"), ("português", "portuguese"), ("portuguesa", "portuguese"),
    ("français", "french"), ("française", "french"), ("deutsch", "german"),
    ("deutsche", "german"), ("deutscher", "german"), ("deutsches", "german"),
    ("alemán", "german"), ("italiano", "italian"), ("italiana", "italian"),
    ("italiane", "italian"), ("jamaicano", "jamaican"), ("argentino", "argentine"),
)  # fmt: skip
# Function words that would otherwise read as noise; never halves of a compound ("confusion").
# Not "per", "sin", "e", "y": English words or key letters, as in "beats per minute".
FOREIGN_FUNCTION_WORDS: tuple[tuple[str, str], ...] = (
    ("para", "for"), ("pour", "for"), ("für", "for"), ("zum", "for"), ("zur", "for"),
    ("con", "with"), ("avec", "with"), ("mit", "with"), ("com", "with"), ("sans", "without"),
    ("ohne", "without"), ("senza", "without"), ("et", "and"), ("und", "and"),
)  # fmt: skip
